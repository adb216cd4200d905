"""The ``pilot`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

#: Entry point group of commands that plugins add: ``pilot NAME ARGS`` calls ``main(ARGS)``.
COMMANDS_GROUP = "pilot.commands"


def plugin_commands() -> dict[str, EntryPoint]:
    """Sub-commands installed plugins add (``[project.entry-points."pilot.commands"]``), by name."""
    builtin = {"plugins", "version", "new-plugin", "bench"}
    return {ep.name: ep for ep in entry_points(group=COMMANDS_GROUP) if ep.name not in builtin}


def main(argv: list[str] | None = None) -> int:
    """``pilot plugins`` lists what is installed; ``pilot new-plugin`` stamps a new plugin
    distribution; ``pilot bench`` runs the throughput benchmark."""
    from pilot.scaffold import KINDS

    parser = argparse.ArgumentParser(prog="pilot")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("plugins", help="list the loaded plugins and what they register")
    sub.add_parser("version", help="print the version")
    new = sub.add_parser("new-plugin", help="write a new plugin distribution (pilot-NAME) from the template",
                         description="Write a plugin distribution that passes the conformance suite of its kind "
                                     "before you change a line; its README says what to replace.")
    new.add_argument("name", help="the plugin's name: its URL scheme, entry point, pilot-NAME, pilot_NAME")
    new.add_argument("--kind", required=True, choices=KINDS,
                     help="a resource adaptor, a data backend or a coordination store")
    new.add_argument("--dir", type=Path, default=None, help="where to write it (default: ./pilot-NAME)")
    bench = sub.add_parser("bench", help="run the throughput benchmark", add_help=False)
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    commands = plugin_commands()
    for name, entry in sorted(commands.items()):
        plugin = sub.add_parser(name, help=f"commands of plugin {entry.dist.name if entry.dist else name}",
                                add_help=False)
        plugin.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command in commands:
        run: Callable[[list[str]], int] = commands[args.command].load()
        return run(args.rest)
    if args.command == "version":
        from pilot import version

        print(version)
    elif args.command == "plugins":
        from pilot.plugin.manager import PluginManager

        manager = PluginManager()
        print("plugins:", ", ".join(manager.plugin_names()))
        print("resource adaptors:", ", ".join(sorted(manager.adaptors)))
        print("coordination stores:", ", ".join(sorted(manager.stores)))
        print("data backends:", ", ".join(sorted(manager.data_backends)))
        print("launch methods:", ", ".join(sorted(manager.launch_methods)))
    elif args.command == "new-plugin":
        return _new_plugin(args.name, args.kind, args.dir)
    elif args.command == "bench":
        from pilot.bench import main as bench_main

        return bench_main(args.rest)
    return 0


def _new_plugin(name: str, kind: str, directory: Path | None) -> int:
    from pilot.errors import PilotError
    from pilot.scaffold import next_steps, stamp

    target = directory if directory is not None else Path(f"pilot-{name}")
    try:
        stamp(name, kind, target)
    except PilotError as exc:
        print(f"pilot new-plugin: error: {exc}", file=sys.stderr)
        return 2
    print(next_steps(name, kind, target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
