"""Output: one JSON document with ``--json``, else ``rich`` tables (rich decides colour; into a
pipe, no colour and no box drawing, and lines are never wrapped)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table

F = TypeVar("F", bound=Callable[..., Any])

STATE_STYLES = {"Done": "green", "Running": "cyan", "Staging": "cyan", "Pending": "yellow", "New": "yellow",
                "Failed": "bold red", "Canceled": "magenta", "Unknown": "dim"}


def json_option(func: F) -> F:
    """The ``--json`` flag of every listing and ``show``."""
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a table.")(func)


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr); not a terminal: no colour, no wrapping."""
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal:
        out = Console(stderr=stderr, highlight=False, width=100_000, no_color=True, soft_wrap=True)
    return out


def table(*columns: str, title: str | None = None, out: Console | None = None) -> Table:
    """A table whose box is drawn only on a terminal."""
    from rich import box
    from rich.table import Table

    on_terminal = (out or console()).is_terminal
    made = Table(*columns, title=title, box=box.SIMPLE_HEAD if on_terminal else None,
                 show_edge=on_terminal, pad_edge=False, title_justify="left")
    return made


def print_json(document: Any) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(document, indent=2, sort_keys=True, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def show(renderable: RenderableType) -> None:
    """Print a rich renderable on stdout (into a pipe: plain text, no trailing blanks)."""
    out = console()
    if out.is_terminal:
        out.print(renderable)
        return
    with out.capture() as captured:
        out.print(renderable)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def state_text(state: str | None) -> str:
    """A state in rich markup, coloured by kind of state."""
    if not state:
        return ""
    style = STATE_STYLES.get(state)
    return f"[{style}]{state}[/]" if style else state


def when(stamp: float | None) -> str:
    """A timestamp as local time, '' for None."""
    if not stamp:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(stamp)))


def cell(value: Any) -> str:
    """A table cell: '' for None, markup escaped."""
    from rich.markup import escape

    return "" if value is None else escape(str(value))


def details_table(details: Mapping[str, Any], title: str) -> Table:
    """Key/value rows of a ``get_details()`` answer (nested values as JSON)."""
    out = table("field", "value", title=title)
    for key, value in details.items():
        if key == "state":
            text = state_text(str(value))
        elif key in ("submitted", "started", "finished", "heartbeat") and isinstance(value, (int, float)):
            text = when(value)
        elif isinstance(value, (dict, list, tuple)):
            text = cell(json.dumps(value, sort_keys=True, default=_jsonable))
        else:
            text = cell(value)
        out.add_row(key, text)
    return out


def rows_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]], title: str | None = None
               ) -> Table:
    """A table of ``rows`` with ``columns`` as (key, heading); ``state`` keys coloured."""
    out = table(*(heading for _, heading in columns), title=title)
    for row in rows:
        out.add_row(*(state_text(row.get(key)) if key == "state" else
                      when(row.get(key)) if key in ("submitted", "started", "finished") else cell(row.get(key))
                      for key, _ in columns))
    return out
