"""Loads the built-in plugins and those installed under the entry-point group ``pilot``, and
collects their registration records."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

import pluggy

from pilot.errors import PilotError
from pilot.plugin import NAME, spec
from pilot.plugin.types import (
    AgentResources,
    CoordinationStoreRecord,
    DataBackendRecord,
    LaunchMethodRecord,
    PilotView,
    ResourceAdaptorRecord,
    UnitView,
)
from pilot.states import Kind, State

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
Rec = TypeVar("Rec")


def blocked_from_env(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The plugin names listed in ``PILOT_DISABLE_PLUGINS``."""
    raw = (os.environ if environ is None else environ).get(BLOCK_ENV, "")
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


def _wrong_answer(hook_name: str, answer: object, expected: str) -> PilotError:
    return PilotError(f"a {hook_name} implementation returned {type(answer).__name__}, not {expected}")


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
        hook = self.pm.hook
        self.adaptors: dict[str, ResourceAdaptorRecord] = self._collect(
            self._registered(hook.pilot_resource_adaptors, ResourceAdaptorRecord), lambda r: r.schemes, "scheme")
        self.stores: dict[str, CoordinationStoreRecord] = self._collect(
            self._registered(hook.pilot_coordination_stores, CoordinationStoreRecord), lambda r: r.schemes,
            "scheme")
        self.data_backends: dict[str, DataBackendRecord] = self._collect(
            self._registered(hook.pilot_data_backends, DataBackendRecord), lambda r: r.schemes,
            "data backend scheme")
        self.launch_methods: dict[str, LaunchMethodRecord] = self._collect(
            self._registered(hook.pilot_launch_methods, LaunchMethodRecord), lambda r: (r.name,), "launch method")

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

    # Typed hook calls: the core calls every hook through one of these methods, never through
    # pluggy's untyped relay, so mypy checks both sides of the contract in ``pilot.plugin.spec``.

    def agent_resources(self, environ: Mapping[str, str], requested_slots: int) -> AgentResources | None:
        """``pilot_agent_resources``: the first plugin that recognises ``environ`` describes the
        allocation; None when none does (the built-in ``host-resources`` always does)."""
        found: object = self.pm.hook.pilot_agent_resources(environ=environ, requested_slots=requested_slots)
        if found is None or isinstance(found, AgentResources):
            return found
        raise _wrong_answer("pilot_agent_resources", found, "AgentResources or None")

    def place_unit(self, unit: UnitView, pilots: Sequence[PilotView]) -> str | None:
        """``pilot_place_unit``: the id of the pilot the first answering policy chose, or None."""
        chosen: object = self.pm.hook.pilot_place_unit(unit=unit, pilots=pilots)
        if chosen is None or isinstance(chosen, str):
            return chosen
        raise _wrong_answer("pilot_place_unit", chosen, "a pilot id or None")

    def state_changed(self, kind: Kind, entity_id: str, old: State, new: State) -> None:
        """``pilot_state_changed``: tell every observer about one change."""
        self.pm.hook.pilot_state_changed(kind=kind, entity_id=entity_id, old=old, new=new)

    def implementers(self, hook_name: str) -> list[str]:
        """The names of the plugins implementing hook ``hook_name``, in call order."""
        caller: pluggy.HookCaller = getattr(self.pm.hook, hook_name)
        return [impl.plugin_name for impl in reversed(caller.get_hookimpls())]

    def blocked_hint(self) -> str:
        """`` blocked by PILOT_DISABLE_PLUGINS: a, b`` when plugins are blocked, else empty: for
        errors about something a blocked plugin may have provided."""
        return f" blocked by {BLOCK_ENV}: {', '.join(sorted(self.blocked))}" if self.blocked else ""

    def plugin_names(self) -> list[str]:
        """Names of every registered plugin."""
        return sorted(name for name, plugin in self.pm.list_name_plugin() if plugin is not None)  # None: blocked

    def _registered(self, caller: pluggy.HookCaller, record_type: type[Rec]) -> list[tuple[str, Rec]]:
        """Call a registration hook on each plugin; ``(plugin name, record)`` for each record,
        a record of the wrong type being the plugin's error."""
        found: list[tuple[str, Rec]] = []
        for impl in caller.get_hookimpls():
            answer = impl.function() or ()
            if not isinstance(answer, list | tuple):
                raise PilotError(f"plugin {impl.plugin_name!r}: {caller.name} returned "
                                 f"{type(answer).__name__}, not a list")
            for record in answer:
                if not isinstance(record, record_type):
                    raise PilotError(f"plugin {impl.plugin_name!r}: {caller.name} returned "
                                     f"{type(record).__name__}, not {record_type.__name__}")
                found.append((impl.plugin_name, record))
        return found

    @staticmethod
    def _collect(records: Iterable[tuple[str, Rec]], keys: Callable[[Rec], Iterable[str]], what: str) -> dict[str, Rec]:
        found: dict[str, Rec] = {}
        owner: dict[str, str] = {}
        for plugin_name, record in records:
            for key in keys(record):
                if key in found:
                    raise PilotError(
                        f"{what} {key!r} is claimed by two plugins: {owner[key]!r} and {plugin_name!r}"
                        f" (block one with {BLOCK_ENV})")
                found[key] = record
                owner[key] = plugin_name
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

    def _lookup(self, table: Mapping[str, R], key: str, what: str, setting: str | None) -> R:
        try:
            return table[key]
        except KeyError:
            known = ", ".join(sorted(table)) or "none"
            raise PilotError(f"no {what} {key!r} (installed: {known}); is its plugin installed?{self.blocked_hint()}",
                             key=setting) from None
