"""Site configuration: named resources that admins (and users) define in TOML, so a pilot
description may say ``"resource": "mycluster"`` instead of a ``service_url``.

Files read, later ones overriding earlier ones key by key within a resource:

1. ``/etc/pilot/resources.toml`` (system-wide, written by the site admins)
2. ``$XDG_CONFIG_HOME/pilot/resources.toml`` (default ``~/.config/pilot/resources.toml``)

``$PILOT_SITE_CONFIG`` replaces that list: one path, or several separated by ``:``.
A missing file is skipped; a bad one raises ``PilotError`` naming the file, line and key.
Nothing is read at import time: ``resolve_pilot`` reads the files each time it is called.

    [resources.mycluster]
    service_url = "slurm://localhost"
    queue = "debug"
    project = "abc123"
    processes_per_node = 4
    walltime = 30                                   # minutes
    python = "/opt/py311/bin/python3"               # runs the agent on the compute nodes
    pre_commands = ["module load python/3.11"]      # run before the agent starts
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pilot.descriptions import PilotComputeDescription
from pilot.errors import PilotError

SITE_CONFIG_ENV = "PILOT_SITE_CONFIG"
SYSTEM_CONFIG = Path("/etc/pilot/resources.toml")

#: Resource keys that are defaults for the pilot description's keys of the same name.
DESCRIPTION_DEFAULTS = ("service_url", "queue", "project", "reservation", "processes_per_node", "walltime",
                        "working_directory", "environment", "extra")
#: Resource keys for how the agent is started.
AGENT_KEYS = ("python", "pre_commands")
RESOURCE_KEYS = (*DESCRIPTION_DEFAULTS, *AGENT_KEYS, "description")


@dataclasses.dataclass(frozen=True)
class SiteResource:
    """One named resource: defaults for the pilot description and how to start the agent."""

    name: str
    defaults: Mapping[str, Any]
    python: str | None = None
    pre_commands: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ResolvedPilot:
    """A pilot description with its resource's defaults filled in, and how to start its agent."""

    description: PilotComputeDescription
    python: str
    pre_commands: tuple[str, ...] = ()


def config_paths(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The site files in the order they are read (later ones override earlier ones)."""
    env = os.environ if environ is None else environ
    if env.get(SITE_CONFIG_ENV):
        return [Path(p).expanduser() for p in env[SITE_CONFIG_ENV].split(os.pathsep) if p]
    config_home = Path(env.get("XDG_CONFIG_HOME") or Path(env.get("HOME") or "~").expanduser() / ".config")
    return [SYSTEM_CONFIG, config_home / "pilot" / "resources.toml"]


def _line_of(text: str, table: str | None, key: str | None) -> int:
    """Best-effort line number of ``key`` in ``[table]`` (or of the table header)."""
    current: str | None = None
    header_line = 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        header = re.match(r"^\[\s*([^\[\]]+?)\s*\]", stripped)
        if header:
            current = header.group(1).replace('"', "").replace("'", "").replace(" ", "")
            if current == table:
                header_line = number
            continue
        if key is not None and current == table and re.match(rf"^[\"']?{re.escape(key)}[\"']?\s*[=.]", stripped):
            return number
    return header_line or 1


def _fail(path: Path, text: str, resource: str | None, key: str | None, problem: str) -> PilotError:
    line = _line_of(text, f"resources.{resource}" if resource else None, key)
    where = f"resources.{resource}.{key}" if resource and key else (f"resources.{resource}" if resource else key)
    return PilotError(f"{path}: line {line}: {where}: {problem}", key=key)


def _check_value(key: str, value: Any) -> str | None:
    """What is wrong with ``value`` for resource key ``key`` (None when it is fine)."""
    if key in ("python", "service_url", "queue", "project", "reservation", "working_directory", "description"):
        return None if isinstance(value, str) and value else "must be a non-empty string"
    if key == "pre_commands":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return None if ok else "must be a list of strings (shell commands)"
    if key in ("environment", "extra"):
        return None if isinstance(value, dict) else "must be a table"
    if key == "processes_per_node":
        return None if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else \
            "must be a positive integer"
    if key == "walltime":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        return None if ok else "must be a positive number of minutes"
    return None


def load_file(path: Path) -> dict[str, dict[str, Any]]:
    """The resources defined in one file, checked; ``{}`` when it does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise PilotError(f"{path}: cannot read site configuration: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+)", str(exc))
        line = f"line {match.group(1)}: " if match else ""
        raise PilotError(f"{path}: {line}not valid TOML: {exc}") from None
    sections = plugin_sections()
    for top in data:
        if top in sections:
            if not isinstance(data[top], dict):
                raise _fail(path, text, None, top, f"[{top}] must be a table (the settings of plugin {top!r})")
        elif top != "resources":
            near = difflib.get_close_matches(top, ["resources", *sections], n=1)
            raise _fail(path, text, None, top, "unknown top-level key; resources are defined under "
                        "[resources.<name>], a plugin's settings under [<plugin name>]"
                        + (f" (did you mean {near[0]!r}?)" if near else ""))
    resources = data.get("resources", {})
    if not isinstance(resources, dict):
        raise _fail(path, text, None, "resources", "must be a table of [resources.<name>] tables")
    for name, table in resources.items():
        if not isinstance(table, dict):
            raise _fail(path, text, None, name, f"resources.{name} must be a table")
        for key, value in table.items():
            if key not in RESOURCE_KEYS:
                close = difflib.get_close_matches(key, RESOURCE_KEYS, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(RESOURCE_KEYS)}"
                raise _fail(path, text, name, key, f"unknown key; {hint}")
            problem = _check_value(key, value)
            if problem:
                raise _fail(path, text, name, key, f"{problem}, got {value!r}")
    return resources


def plugin_sections() -> frozenset[str]:
    """Top-level tables a site file may hold besides ``resources``: one per installed plugin
    distribution (entry point of group ``pilot``), holding that plugin's settings."""
    from importlib.metadata import entry_points

    return frozenset(ep.name for ep in entry_points(group="pilot"))


def load_section(name: str, paths: Sequence[Path] | None = None) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A plugin's ``[name]`` table from every site file, merged key by key (later files win;
    sub-tables are merged too), and the files it came from. Files are read and checked as for
    resources, each time this is called."""
    merged: dict[str, Any] = {}
    sources: list[str] = []
    for path in config_paths() if paths is None else paths:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise PilotError(f"{path}: cannot read site configuration: {exc.strerror or exc}") from None
        load_file(path)  # checks the whole file: a bad one fails naming file, line and key
        table = tomllib.loads(text).get(name)
        if isinstance(table, dict):
            _merge(merged, table)
            sources.append(str(path))
    return merged, tuple(sources)


def _merge(into: dict[str, Any], table: Mapping[str, Any]) -> None:
    for key, value in table.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, dict) else value


def section_line(path: str, table: str, key: str | None) -> int:
    """Best-effort line of ``key`` in ``[table]`` of site file ``path`` (for error messages)."""
    try:
        return _line_of(Path(path).read_text(), table, key)
    except OSError:
        return 1


def load_resources(paths: Sequence[Path] | None = None) -> dict[str, SiteResource]:
    """Every resource of every site file, merged key by key (later files win)."""
    merged: dict[str, dict[str, Any]] = {}
    sources: dict[str, list[str]] = {}
    for path in config_paths() if paths is None else paths:
        for name, table in load_file(path).items():
            merged.setdefault(name, {}).update(table)
            sources.setdefault(name, []).append(str(path))
    out = {}
    for name, table in merged.items():
        defaults = {k: v for k, v in table.items() if k in DESCRIPTION_DEFAULTS}
        out[name] = SiteResource(name, defaults, table.get("python"), tuple(table.get("pre_commands", ())),
                                 tuple(sources[name]))
    return out


def resolve_pilot(description: PilotComputeDescription, paths: Sequence[Path] | None = None) -> ResolvedPilot:
    """Fill in the named resource's defaults (keys the description sets win; ``environment`` and
    ``extra`` are merged) and say which Python and pre-commands start the agent."""
    if not description.resource:
        return ResolvedPilot(description, sys.executable)
    searched = config_paths() if paths is None else list(paths)
    resources = load_resources(searched)
    site = resources.get(description.resource)
    if site is None:
        known = ", ".join(sorted(resources)) or "none"
        raise PilotError(f"no site resource {description.resource!r} (defined: {known}; files read: "
                         f"{', '.join(str(p) for p in searched)}; set {SITE_CONFIG_ENV} to use another)",
                         key="resource")
    given = {k: v for k, v in description.to_dict().items() if v != ""}
    merged: dict[str, Any] = {k: v for k, v in site.defaults.items() if k not in ("environment", "extra")}
    merged.update(given)
    for key in ("environment", "extra"):
        combined = {**site.defaults.get(key, {}), **given.get(key, {})}
        if combined:
            merged[key] = combined
    try:
        resolved = PilotComputeDescription.from_dict(merged)
    except PilotError as exc:
        raise PilotError(f"site resource {site.name!r} ({', '.join(site.sources)}): {exc}", key=exc.key) from None
    if not resolved.service_url:
        raise PilotError(f"site resource {site.name!r} ({', '.join(site.sources)}) has no service_url",
                         key="service_url")
    return ResolvedPilot(resolved, site.python or sys.executable, site.pre_commands)
