"""The CLI reference (``docs/cli.md``), rendered from the click commands themselves:
``python -m pilot.cli.reference > docs/cli.md``. Plugin commands are left out (they depend on
what is installed)."""

from __future__ import annotations

import inspect

import click

from pilot.cli import COMMANDS, EXIT_CODES, cli

_WIDTH = 100


def _context(command: click.Command, name: str, parent: click.Context | None) -> click.Context:
    return click.Context(command, info_name=name, parent=parent, terminal_width=_WIDTH, max_content_width=_WIDTH)


def _section(command: click.Command, name: str, parent: click.Context | None, depth: int) -> list[str]:
    ctx = _context(command, name, parent)
    lines = [f"{'#' * depth} `{ctx.command_path}`", ""]
    lines += ["```", command.get_usage(ctx).strip(), "```", ""]
    if command.help:
        lines += [inspect.cleandoc(command.help), ""]
    records = [(param, param.get_help_record(ctx)) for param in command.get_params(ctx)]
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    if arguments:
        lines += ["Arguments: " + ", ".join(f"`{a.human_readable_name}`" + ("" if a.required else " (optional)")
                                             for a in arguments), ""]
    options = [record for param, record in records if record is not None and isinstance(param, click.Option)]
    if options:
        lines += ["| option | meaning |", "|---|---|"]
        lines += [f"| `{opts}` | {text.replace('|', '/')} |" for opts, text in options]
        lines.append("")
    if isinstance(command, click.Group):
        for sub in command.list_commands(ctx):
            found = command.get_command(ctx, sub)
            if found is not None and (command is not cli or sub in COMMANDS):
                lines += _section(found, sub, ctx, depth + 1)
    return lines


def render() -> str:
    """The reference as markdown."""
    head = ["# The `pilot` command", "",
            "Generated from the command itself by `python -m pilot.cli.reference > docs/cli.md`; "
            "a test keeps it current. Every command takes `--help`; every listing and `show` takes "
            "`--json` (one JSON document). Without `--json`, tables are drawn with colour and boxes on a "
            "terminal only (`NO_COLOR` is honoured); into a pipe they are plain columns. Object URLs "
            "(`<store url>#<kind>/<id>`) carry their store; a bare id is looked up in the store chosen by "
            "`--store`, `$PILOT_COORDINATION_URL` or `$PILOT_HOME`. Installed plugins may add commands "
            "(`pilot NAME ARGS`: every argument goes to the plugin). Where the `pilot` script is not on "
            "`PATH` (`pip install --user`), `python -m pilot` runs the same command.", "",
            "## Exit codes", "", "| code | meaning |", "|---|---|"]
    head += [f"| {code} | {meaning} |" for code, meaning in EXIT_CODES]
    head.append("")
    return "\n".join(head + _section(cli, "pilot", None, 2)).rstrip() + "\n"


if __name__ == "__main__":
    click.echo(render(), nl=False)
