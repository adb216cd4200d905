"""The agent's launch methods, asked of the plugin manager by name (never imported): a unit
asking for a method that no plugin registered (not installed, or its plugin blocked with
``PILOT_DISABLE_PLUGINS``) fails with the manager's reason, which names the blocked plugins."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from pilot.errors import PilotError
from pilot.plugin.manager import PluginManager
from pilot.plugin.types import LaunchMethod

#: The launch method of units on the agent's own node (the built-in plugin ``launch`` registers it).
LOCAL_LAUNCH_METHOD = "fork"


class MissingLaunchMethod(PilotError, KeyError):
    """No plugin registered the launch method asked for: a ``KeyError`` to mapping look-ups
    (``get``, ``in``), a ``PilotError`` carrying the manager's message."""

    def __str__(self) -> str:
        return self.value


class LaunchMethods(Mapping[str, LaunchMethod]):
    """The launch methods registered with ``plugins``, by name."""

    def __init__(self, plugins: PluginManager) -> None:
        self.plugins = plugins

    def __getitem__(self, name: str) -> LaunchMethod:
        try:
            return self.plugins.launch_method(name).method
        except PilotError as exc:
            raise MissingLaunchMethod(str(exc)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.plugins.launch_methods)

    def __len__(self) -> int:
        return len(self.plugins.launch_methods)
