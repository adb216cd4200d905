"""The ``pilot`` command: one click group whose sub-commands are imported only when used.

Exit codes (for scripts): 0 success; 1 a ``PilotError`` or an object that is not there (one line
on stderr); 2 a usage error; 3 ``wait`` saw a Failed or Canceled end; 124 ``wait`` timed out;
130 interrupted (Ctrl-C). ``pilot NAME ARGS`` of a plugin exits with what the plugin returns.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click

import pilot

#: Entry point group of commands that plugins add: ``pilot NAME ARGS`` calls ``main(ARGS)``.
COMMANDS_GROUP = "pilot.commands"

#: The built-in sub-commands: name -> (module, attribute of a click command). Imported lazily,
#: on first use. Add a command here with one line.
COMMANDS: dict[str, tuple[str, str]] = {
    "pilots": ("pilot.cli.pilots", "pilots"),
    "units": ("pilot.cli.units", "units"),
    "services": ("pilot.cli.data", "services"),
    "data": ("pilot.cli.data", "data"),
    "status": ("pilot.cli.status", "status"),
    "watch": ("pilot.cli.status", "watch"),
    "config": ("pilot.cli.config_check", "config"),
    "plugins": ("pilot.cli.basic", "plugins"),
    "version": ("pilot.cli.basic", "version"),
    "new-plugin": ("pilot.cli.basic", "new_plugin"),
    "bench": ("pilot.cli.basic", "bench"),
    "timeline": ("pilot.timeline.cli", "timeline"),
}

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FAILED, EXIT_TIMEOUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 124, 130
EXIT_CODES = (
    (EXIT_OK, "success"),
    (EXIT_ERROR, "an error (a PilotError, an object or store that is not there, problems found by "
                 "`config check`); one line on stderr"),
    (EXIT_USAGE, "a usage error (unknown command or option, bad value)"),
    (EXIT_FAILED, "`wait` commands: what was waited for ended Failed or Canceled"),
    (EXIT_TIMEOUT, "`wait` commands: `--timeout` ran out first"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)


def plugin_commands() -> dict[str, EntryPoint]:
    """Sub-commands installed plugins add (``[project.entry-points."pilot.commands"]``), by name."""
    return {ep.name: ep for ep in entry_points(group=COMMANDS_GROUP) if ep.name not in COMMANDS}


class PluginCommand(click.Command):
    """``pilot NAME ARGS``: every argument (``--help`` too) goes to the plugin's ``main(ARGS)``."""

    def __init__(self, name: str, entry: EntryPoint) -> None:
        owner = entry.dist.name if entry.dist else name
        super().__init__(name, help=f"Commands of plugin {owner} (`pilot {name} --help`).",
                         short_help=f"commands of plugin {owner}", add_help_option=False,
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                           "help_option_names": []},
                         params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)])
        self.entry = entry

    def invoke(self, ctx: click.Context) -> Any:
        run = self.entry.load()
        return int(run(list(ctx.params["args"])) or 0)


class PilotGroup(click.Group):
    """The ``pilot`` group: built-in commands from ``COMMANDS``, then plugin commands."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS) + sorted(plugin_commands())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module, attribute = COMMANDS[cmd_name]
            command: click.Command = getattr(importlib.import_module(module), attribute)
            return command
        entry = plugin_commands().get(cmd_name)
        return PluginCommand(cmd_name, entry) if entry is not None else None


@click.group(cls=PilotGroup, epilog="Exit codes: 0 success, 1 error, 2 usage error, 3 waited-for object Failed "
                                    "or Canceled, 124 wait timed out, 130 interrupted.")
@click.option("--store", "store_url", metavar="URL", default=None,
              help="The coordination store (default: $PILOT_COORDINATION_URL, else the embedded store "
                   "under $PILOT_HOME, ~/.pilot). Object URLs carry their own store.")
@click.version_option(pilot.version, "--version", prog_name="pilot", message="%(prog)s %(version)s",
                      help="Print the version of pilot and exit.")
@click.pass_context
def cli(ctx: click.Context, store_url: str | None) -> None:
    """Pilots, units, services and data in a coordination store; site configuration; plugins."""
    from pilot.cli.context import CliContext

    ctx.obj = CliContext(store_url)


def main(argv: list[str] | None = None) -> int:
    """Run the ``pilot`` command; its exit code. Usage errors raise ``SystemExit(2)`` (as
    argparse does) after printing the usage."""
    from pilot.errors import PilotError

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        result = cli.main(args, prog_name="pilot", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        exc.show()
        raise SystemExit(EXIT_USAGE) from None
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except PilotError as exc:
        print(f"pilot: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # `pilot units ls | head`
        sys.stderr.close()
        return EXIT_OK
    return result if isinstance(result, int) else EXIT_OK


def _one_line(message: str) -> str:
    return " ".join(message.split())
