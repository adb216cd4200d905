"""The ``pilot`` command."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """``pilot plugins`` lists what is installed; ``pilot bench`` runs the throughput benchmark."""
    parser = argparse.ArgumentParser(prog="pilot")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("plugins", help="list the loaded plugins and what they register")
    sub.add_parser("version", help="print the version")
    bench = sub.add_parser("bench", help="run the throughput benchmark", add_help=False)
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
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
    elif args.command == "bench":
        from pilot.bench import main as bench_main

        return bench_main(args.rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
