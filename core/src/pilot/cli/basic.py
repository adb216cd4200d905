"""``pilot plugins``, ``pilot version``, ``pilot new-plugin`` and ``pilot bench``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pilot.cli.output import json_option, print_json
from pilot.scaffold import KINDS

if TYPE_CHECKING:
    from pilot.plugin.manager import PluginManager


def hooks_by_plugin(manager: PluginManager) -> dict[str, list[str]]:
    """``{plugin name: [hooks it implements]}`` for every hook of ``pilot.plugin.spec``."""
    from pilot.plugin import spec

    found: dict[str, list[str]] = {name: [] for name in manager.plugin_names()}
    for hook in sorted(name for name in vars(spec) if name.startswith("pilot_")):
        for plugin in manager.implementers(hook):
            found.setdefault(plugin, []).append(hook)
    return found


@click.command()
@json_option
def plugins(as_json: bool) -> None:
    """List the loaded plugins, what they register and the hooks each implements."""
    from pilot.plugin.manager import PluginManager

    manager = PluginManager()
    hooks = hooks_by_plugin(manager)
    listing = {"plugins": manager.plugin_names(), "resource adaptors": sorted(manager.adaptors),
               "coordination stores": sorted(manager.stores), "data backends": sorted(manager.data_backends),
               "launch methods": sorted(manager.launch_methods)}
    if as_json:
        print_json({**{key.replace(" ", "_"): value for key, value in listing.items()}, "hooks": hooks})
        return
    for key, names in listing.items():
        click.echo(f"{key}: {', '.join(names)}")
    for name in manager.plugin_names():
        click.echo(f"hooks of {name}: {', '.join(hooks[name]) or '(none)'}")


@click.command()
def version() -> None:
    """Print the version."""
    from pilot import version as installed

    click.echo(installed)


class _Kind(click.Choice[str]):
    """A plugin kind; the error says 'invalid choice' as before."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if value not in self.choices:
            self.fail(f"invalid choice: {value!r} (choose from {', '.join(map(str, self.choices))})", param, ctx)
        return str(value)


@click.command("new-plugin")
@click.argument("name")
@click.option("--kind", required=True, type=_Kind(KINDS),
              help="A resource adaptor, a data backend or a coordination store.")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="Where to write it (default: ./pilot-NAME).")
def new_plugin(name: str, kind: str, directory: Path | None) -> int:
    """Write a new plugin distribution (pilot-NAME) from the template.

    It passes the conformance suite of its kind before you change a line; its README says what
    to replace. NAME is the plugin's name: its URL scheme, entry point, pilot-NAME, pilot_NAME.
    A refused name or directory exits 2."""
    from pilot.errors import PilotError
    from pilot.scaffold import next_steps, stamp

    target = directory if directory is not None else Path(f"pilot-{name}")
    try:
        stamp(name, kind, target)
    except PilotError as exc:
        print(f"pilot new-plugin: error: {exc}", file=sys.stderr)
        return 2
    click.echo(next_steps(name, kind, target))
    return 0


@click.command(add_help_option=False, context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                                        "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> int:
    """Run the throughput benchmark (every argument goes to it: `pilot bench --help`)."""
    from pilot.bench import main as bench_main

    return bench_main(list(args))
