"""Loads the built-in plugins and those installed under the entry-point group ``pilot``, and
collects their registration records."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import pluggy

from pilot.errors import PilotError
from pilot.plugin import NAME, spec
from pilot.plugin.types import (
    CoordinationStoreRecord,
    DataBackendRecord,
    LaunchMethodRecord,
    ResourceAdaptorRecord,
)

#: Built-in plugins, registered by name exactly like third-party ones.
BUILTIN_PLUGINS: Mapping[str, str] = {
    "fork": "pilot.builtin.fork",
    "launch": "pilot.builtin.launch",
    "host-resources": "pilot.builtin.resources",
    "sqlite": "pilot.store.sqlite",
    "placement": "pilot.placement",
    "batch": "pilot.builtin.batch",
    "local-data": "pilot.data.local",
}
#: Comma-separated plugin names that are not loaded (built-in or entry-point names).
BLOCK_ENV = "PILOT_DISABLE_PLUGINS"

R = TypeVar("R")


def blocked_from_env(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The plugin names listed in ``PILOT_DISABLE_PLUGINS``."""
    raw = (os.environ if environ is None else environ).get(BLOCK_ENV, "")
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


class PluginManager:
    """The loaded plugins and what they registered, keyed by scheme or name."""

    def __init__(self, *, blocked: Iterable[str] | None = None, entry_points: bool = True,
                 extra_plugins: Mapping[str, object] | None = None) -> None:
        self.pm = pluggy.PluginManager(NAME)
        self.pm.add_hookspecs(spec)
        self.blocked = frozenset(blocked_from_env() if blocked is None else blocked)
        for name in self.blocked:
            self.pm.set_blocked(name)
        try:
            for name, module in BUILTIN_PLUGINS.items():
                if name not in self.blocked:
                    self.pm.register(importlib.import_module(module), name=name)
            for name, plugin in (extra_plugins or {}).items():
                if name not in self.blocked:
                    self.pm.register(plugin, name=name)
            if entry_points:
                self._load_entry_points()
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:  # a misspelled hook or a wrong signature
            culprit = self.pm.get_name(exc.plugin)
            where = f"plugin {culprit!r} is invalid: " if culprit else "invalid plugin: "
            raise PilotError(f"{where}{exc} (block it with {BLOCK_ENV})") from exc
        self.adaptors: dict[str, ResourceAdaptorRecord] = self._collect(
            "pilot_resource_adaptors", lambda r: r.schemes, "scheme")
        self.stores: dict[str, CoordinationStoreRecord] = self._collect(
            "pilot_coordination_stores", lambda r: r.schemes, "scheme")
        self.data_backends: dict[str, DataBackendRecord] = self._collect(
            "pilot_data_backends", lambda r: r.schemes, "data backend scheme")
        self.launch_methods: dict[str, LaunchMethodRecord] = self._collect(
            "pilot_launch_methods", lambda r: (r.name,), "launch method")

    def _load_entry_points(self) -> None:
        """Register every entry point of group ``pilot`` not blocked; a plugin that fails to
        load is named in the error, with the way to block it."""
        for entry_point in importlib.metadata.entry_points(group=NAME):
            if entry_point.name in self.blocked or self.pm.get_plugin(entry_point.name) is not None:
                continue
            try:
                plugin = entry_point.load()
            except Exception as exc:
                raise PilotError(f"plugin {entry_point.name!r} ({entry_point.value}) failed to load: {exc}; "
                                 f"reinstall it, or block it with {BLOCK_ENV}={entry_point.name}") from exc
            self.pm.register(plugin, name=entry_point.name)

    @property
    def hook(self) -> Any:
        """The pluggy hook relay (``manager.hook.pilot_place_unit(...)``)."""
        return self.pm.hook

    def plugin_names(self) -> list[str]:
        """Names of every registered plugin."""
        return sorted(name for name, plugin in self.pm.list_name_plugin() if plugin is not None)  # None: blocked

    def _collect(self, hook_name: str, keys: Callable[[Any], Iterable[str]], what: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        owner: dict[str, str] = {}
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            for record in impl.function() or ():
                for key in keys(record):
                    if key in found:
                        raise PilotError(
                            f"{what} {key!r} is claimed by two plugins: {owner[key]!r} and {impl.plugin_name!r}"
                            f" (block one with {BLOCK_ENV})")
                    found[key] = record
                    owner[key] = impl.plugin_name
        return found

    def adaptor_for(self, scheme: str) -> ResourceAdaptorRecord:
        """The adaptor record for a ``service_url`` scheme."""
        return self._lookup(self.adaptors, scheme, "resource adaptor for scheme", "service_url")

    def store_for(self, scheme: str) -> CoordinationStoreRecord:
        """The store record for a ``coordination_url`` scheme."""
        return self._lookup(self.stores, scheme, "coordination store for scheme", "coordination_url")

    def data_backend_for(self, scheme: str) -> DataBackendRecord:
        """The data backend record for a PilotData ``service_url`` scheme."""
        return self._lookup(self.data_backends, scheme, "data backend for scheme", "service_url")

    def launch_method(self, name: str) -> LaunchMethodRecord:
        """The launch method registered under ``name``."""
        return self._lookup(self.launch_methods, name, "launch method", None)

    @staticmethod
    def _lookup(table: Mapping[str, R], key: str, what: str, setting: str | None) -> R:
        try:
            return table[key]
        except KeyError:
            known = ", ".join(sorted(table)) or "none"
            raise PilotError(f"no {what} {key!r} (installed: {known}); is its plugin installed?",
                             key=setting) from None
