"""``pilot new-plugin``: stamp a new plugin distribution from the templates shipped with the core.

The templates live in ``pilot/plugin_template/`` (package data): ``common/`` for every kind, and
one directory per kind (``adaptor``, ``backend``, ``store``) whose files win over ``common``'s.
Every file ends in ``.tmpl`` (so no tool takes a template for code); in names and contents,
``{{key}}`` is replaced by the value of ``key`` (``name``, ``ident``, ``package``, ``dist``,
``Class``, ``summary``), and a leading ``dot-`` in a file name becomes ``.``. Plain text
replacement only: nothing in a template is executed.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Iterator, Mapping
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath

from pilot.errors import PilotError

KINDS = ("adaptor", "backend", "store")
#: What each kind of plugin provides.
WHAT: Mapping[str, str] = {"adaptor": "resource adaptor", "backend": "data backend", "store": "coordination store"}
#: The environment variable the stamped tox.ini reads for where to install pilot-core from.
CORE_REQUIREMENT_ENV = "PILOT_CORE"
SUFFIX = ".tmpl"
NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
MAX_NAME = 40
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
#: Names that would collide with pilot-core itself (its distribution is pilot-core).
RESERVED = frozenset({"core"})


def builtin_names() -> frozenset[str]:
    """Names a new plugin must not take: the built-in plugins' names and every scheme, launch
    method name they register (an entry point named like a built-in is never loaded; a scheme
    claimed twice stops every plugin manager)."""
    from pilot.plugin.manager import BUILTIN_PLUGINS, PluginManager

    manager = PluginManager(blocked=(), entry_points=False)
    return frozenset({*BUILTIN_PLUGINS, *manager.adaptors, *manager.stores, *manager.data_backends,
                      *manager.launch_methods})


def check_name(name: str) -> str:
    """``name`` if it can name a plugin (URL scheme, entry point, ``pilot-<name>``,
    ``pilot_<name>``); ``PilotError`` saying why not otherwise."""
    rule = ("lower-case letters, digits and single hyphens, starting with a letter; it becomes the "
            "URL scheme <name>://, the distribution pilot-<name> and the package pilot_<name>")
    if not NAME.fullmatch(name):
        raise PilotError(f"invalid plugin name {name!r}: use {rule}", key="name")
    if len(name) > MAX_NAME:
        raise PilotError(f"invalid plugin name {name!r}: at most {MAX_NAME} characters", key="name")
    if name.startswith("pilot-") or name == "pilot":
        raise PilotError(f"invalid plugin name {name!r}: leave out the 'pilot-' prefix (the distribution "
                         f"is named pilot-<name> for you)", key="name")
    if name in RESERVED or name in builtin_names():
        raise PilotError(f"plugin name {name!r} is taken by pilot-core (a built-in plugin, scheme or "
                         f"launch method); choose another", key="name")
    return name


def values_for(name: str, kind: str) -> dict[str, str]:
    """The placeholder values for plugin ``name`` of ``kind``."""
    if kind not in KINDS:
        raise PilotError(f"unknown plugin kind {kind!r}: one of {', '.join(KINDS)}", key="kind")
    return {
        "name": name,
        "ident": name.replace("-", "_"),
        "package": "pilot_" + name.replace("-", "_"),
        "dist": "pilot-" + name,
        "Class": "".join(part.capitalize() for part in name.split("-")),
        "summary": f"pilot plugin: the {name}:// {WHAT[kind]}",
    }


def fill(text: str, values: Mapping[str, str], where: str) -> str:
    """``text`` with every ``{{key}}`` replaced; an unknown key is a bug in the template."""

    def one(match: re.Match[str]) -> str:
        try:
            return values[match.group(1)]
        except KeyError:
            raise RuntimeError(f"template {where}: unknown placeholder {match.group(0)}") from None

    return PLACEHOLDER.sub(one, text)


def _walk(root: Traversable, prefix: PurePosixPath) -> Iterator[tuple[PurePosixPath, Traversable]]:
    """Every ``.tmpl`` file under ``root``: (its path as stamped, before placeholders, the file)."""
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            yield from _walk(entry, prefix / entry.name)
        elif entry.name.endswith(SUFFIX):
            name = entry.name[: -len(SUFFIX)]
            yield prefix / ("." + name[4:] if name.startswith("dot-") else name), entry


def templates() -> Traversable:
    """The template tree shipped with pilot-core."""
    return importlib.resources.files("pilot").joinpath("plugin_template")


def render(name: str, kind: str) -> dict[PurePosixPath, str]:
    """Every file of the distribution ``pilot new-plugin name --kind kind`` writes: relative
    path -> contents (the name is not checked here; ``check_name`` does that)."""
    values = values_for(name, kind)
    files: dict[PurePosixPath, str] = {}
    for layer in ("common", kind):
        for relative, entry in _walk(templates().joinpath(layer), PurePosixPath()):
            where = f"{layer}/{relative}"
            files[PurePosixPath(fill(str(relative), values, where))] = fill(entry.read_text(encoding="utf-8"),
                                                                             values, where)
    return dict(sorted(files.items()))


def stamp(name: str, kind: str, directory: Path) -> list[Path]:
    """Write the distribution for plugin ``name`` of ``kind`` into ``directory`` (created; an
    existing empty directory is fine, anything else is refused); return the files written."""
    check_name(name)
    files = render(name, kind)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise PilotError(f"{directory} already exists and is not an empty directory; "
                         f"choose another with --dir", key="dir")
    written = []
    try:
        for relative, text in files.items():
            path = directory.joinpath(*relative.parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    except OSError as exc:
        raise PilotError(f"cannot write the new plugin into {directory}: {exc.strerror or exc}", key="dir") from exc
    return written


def next_steps(name: str, kind: str, directory: Path) -> str:
    """What to do after stamping (printed by ``pilot new-plugin``)."""
    values = values_for(name, kind)
    core = core_checkout()
    tox = f'{CORE_REQUIREMENT_ENV}="-e {core}" tox' if core else "tox"
    return "\n".join([
        f"wrote {values['dist']}, the {name}:// {WHAT[kind]}, in {directory}",
        "next:",
        f"  cd {directory}",
        "  pip install -e '.[test]'   # where pilot-core is installed",
        "  pytest                     # the conformance run: it passes before you change a line",
        f"  {tox}",
        "then follow README.md there: it says what to replace.",
    ]) + "\n"


def core_checkout() -> Path | None:
    """The source directory of pilot-core when it is installed from a checkout (editable)."""
    here = Path(__file__).resolve().parents[2]  # core/src/pilot/scaffold.py -> core/
    return here if (here / "pyproject.toml").is_file() and (here / "src" / "pilot").is_dir() else None
