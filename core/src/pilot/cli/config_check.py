"""``pilot config check [FILE]`` and ``pilot config resources``.

``check`` reads each site file as pilot does (``pilot.site``), then checks what loading cannot:
each resource's ``service_url`` scheme has an installed adaptor, its ``python`` and
``working_directory`` exist, credential files named in ``extra`` exist and are private, the
site file is not writable by others; and for each plugin section, the plugin's own checker:

    def check_site_section(table: Mapping[str, Any], sources: tuple[str, ...]) -> list[str]

(a function of the plugin's ``pilot`` entry point module, optional) returns the problems of its
merged ``[name]`` table, each naming file, line and key."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from pilot.cli import EXIT_ERROR, EXIT_OK
from pilot.cli.output import json_option, print_json, rows_table, show
from pilot.errors import PilotError

#: ``extra`` keys that name a credential file (which must exist and be private).
CREDENTIAL_SUFFIXES = ("key_file", "keyfile", "identity_file", "cert_file", "credentials_file", "token_file")


def check_files(paths: Sequence[Path], *, explicit: bool) -> tuple[list[str], list[str]]:
    """The problems of the site files ``paths`` (a missing file is one when ``explicit``) and
    the names of the resources they define."""
    from pilot import site
    from pilot.plugin.manager import PluginManager

    problems: list[str] = []
    names: list[str] = []
    adaptors: Mapping[str, Any] | None = None
    read: list[Path] = []
    for path in paths:
        if not path.exists():
            if explicit:
                problems.append(f"{path}: no such file")
            continue
        problems += _file_mode(path)
        try:
            resources = site.load_file(path)
        except PilotError as exc:
            problems.append(str(exc))
            continue
        read.append(path)
        if resources and adaptors is None:
            try:
                adaptors = PluginManager().adaptors
            except PilotError as exc:
                problems.append(f"plugins: {exc}")
                adaptors = {}
        for name, table in resources.items():
            names.append(name)
            problems += _resource_problems(path, name, table, adaptors or {})
    problems += _plugin_sections(read)
    return problems, names


def _where(path: Path, resource: str, key: str) -> str:
    from pilot.site import section_line

    return f"{path}: line {section_line(str(path), f'resources.{resource}', key)}: resources.{resource}.{key}"


def _file_mode(path: Path) -> list[str]:
    mode = path.stat().st_mode
    if mode & stat.S_IWOTH or mode & stat.S_IWGRP:
        return [f"{path}: writable by others (mode {stat.S_IMODE(mode):o}): anyone who can write it decides "
                "how agents start; chmod go-w"]
    return []


def _resource_problems(path: Path, name: str, table: Mapping[str, Any], adaptors: Mapping[str, Any]) -> list[str]:
    from pilot.urls import scheme_of

    problems = []
    service_url = table.get("service_url")
    if isinstance(service_url, str):
        try:
            scheme = scheme_of(service_url)
        except PilotError as exc:
            problems.append(f"{_where(path, name, 'service_url')}: {exc}")
        else:
            if scheme not in adaptors:
                problems.append(f"{_where(path, name, 'service_url')}: no resource adaptor for scheme {scheme!r} "
                                f"is installed (installed: {', '.join(sorted(adaptors)) or 'none'})")
    python = table.get("python")
    if isinstance(python, str) and not os.access(os.path.expanduser(python), os.X_OK):
        problems.append(f"{_where(path, name, 'python')}: {python} is not an executable file here")
    workdir = table.get("working_directory")
    if isinstance(workdir, str) and "$" not in workdir and not os.path.isdir(os.path.expanduser(workdir)):
        problems.append(f"{_where(path, name, 'working_directory')}: {workdir} is not a directory here")
    for key, value in (table.get("extra") or {}).items():
        if isinstance(value, str) and str(key).lower().endswith(CREDENTIAL_SUFFIXES):
            problem = credential_file_problem(value)
            if problem:
                problems.append(f"{_where(path, name, 'extra')}: {key}: {problem}")
    return problems


def credential_file_problem(value: str) -> str | None:
    """What is wrong with a credential file: missing, or readable by others (None when fine)."""
    file = Path(value).expanduser()
    try:
        mode = file.stat().st_mode
    except OSError:
        return f"{value} does not exist here"
    if stat.S_IMODE(mode) & 0o077:
        return f"{value} is readable or writable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it"
    return None


def _plugin_sections(paths: Sequence[Path]) -> list[str]:
    from importlib.metadata import entry_points

    from pilot import site

    problems: list[str] = []
    for entry in entry_points(group="pilot"):
        try:
            table, sources = site.load_section(entry.name, paths)
        except PilotError as exc:
            problems.append(str(exc))
            continue
        if not sources:
            continue
        try:
            checker = getattr(entry.load(), "check_site_section", None)
            if checker is not None:
                problems += [str(p) for p in checker(table, sources)]
        except Exception as exc:  # a plugin's checker failing is one more problem, not a crash
            problems.append(f"{', '.join(sources)}: [{entry.name}]: the plugin's check failed: {exc}")
    return problems


@click.group()
def config() -> None:
    """The site configuration (named resources and plugin settings in TOML files)."""


@config.command("check")
@click.argument("file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@json_option
def config_check(file: Path | None, as_json: bool) -> int:
    """Check FILE (default: every site file pilot reads) and exit 1 when anything is wrong.

    Checks every key, each resource's service_url scheme against the installed adaptors, its
    python and working_directory, credential files (present and private), file modes, and plugin
    sections with the plugin's check_site_section when it has one. Problems name file, line and key."""
    from pilot.site import config_paths

    paths = [file] if file is not None else config_paths()
    problems, names = check_files(paths, explicit=file is not None)
    if as_json:
        print_json({"files": [str(p) for p in paths], "resources": names, "problems": problems})
    else:
        for problem in problems:
            click.echo(problem, err=True)
        if not problems:
            read = [str(p) for p in paths if p.exists()]
            click.echo(f"ok: {len(names)} resources in {', '.join(read) or 'no site file'}")
    return EXIT_ERROR if problems else EXIT_OK


@config.command("resources")
@json_option
def config_resources(as_json: bool) -> None:
    """List the configured resources: name, service_url and the files that define them."""
    from pilot.site import config_paths, load_resources

    resources = load_resources(config_paths())
    rows = [{"name": r.name, "service_url": r.defaults.get("service_url"), "sources": list(r.sources),
             "files": ", ".join(r.sources)} for r in sorted(resources.values(), key=lambda r: r.name)]
    if as_json:
        print_json(rows)
    else:
        show(rows_table(rows, (("name", "name"), ("service_url", "service_url"), ("files", "files"))))
