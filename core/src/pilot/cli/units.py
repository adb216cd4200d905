"""``pilot units``: list (by state, by pilot), show, cancel, wait for units and read their logs."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pilot import urls
from pilot.cli import EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT
from pilot.cli.context import obj
from pilot.cli.output import details_table, json_option, print_json, rows_table, show
from pilot.errors import PilotError
from pilot.states import FINAL_STATES, State
from pilot.store import CoordinationStore

if TYPE_CHECKING:
    from pilot.compute import ComputeUnit

UNIT_COLUMNS = (("id", "unit"), ("name", "name"), ("state", "state"), ("pilot", "pilot"), ("exit_code", "exit"),
                ("host", "host"), ("reason", "reason"))
LS_FIELDS = ("id", "cds_id", "pilot_id", "state", "description", "exit_code", "host", "sandbox", "submitted",
             "started", "finished", "reason", "attempts")
STATE_CHOICE = click.Choice([s.value for s in State], case_sensitive=False)


@click.group()
def units() -> None:
    """Compute units in the store: ls, show, cancel, wait, logs."""


@units.command("ls")
@click.option("--state", "states", multiple=True, type=STATE_CHOICE,
              help="Only units in this state (repeat for several); `--state Failed` shows why each failed.")
@click.option("--pilot", "pilot_url", metavar="URL", default=None, help="Only units bound to this pilot (URL or id).")
@click.option("--service", "service_url", metavar="URL", default=None,
              help="Only units of this compute data service (URL or id).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many (oldest first).")
@json_option
@click.pass_context
def units_ls(ctx: click.Context, *, states: tuple[str, ...], pilot_url: str | None, service_url: str | None,
             limit: int | None, as_json: bool) -> None:
    """List units in submission order: state, pilot, exit code, host and the reason of a failure."""
    context = obj(ctx)
    store, pilot_id, cds_id = context.store(), None, None
    if pilot_url:
        store, _, pilot_id = context.locate(pilot_url, ("pilot",))
    if service_url:
        store, _, cds_id = context.locate(service_url, ("cds",))
    wanted = [State(s.capitalize()) for s in states] or None
    records = store.find_units(cds_id=cds_id, pilot_id=pilot_id, states=wanted, limit=limit, fields=LS_FIELDS)
    rows = [unit_row(store.url, r) for r in records]
    if as_json:
        print_json(rows)
    else:
        show(rows_table(rows, UNIT_COLUMNS))


def unit_row(store_url: str, record: dict[str, Any]) -> dict[str, Any]:
    """What ``units ls`` shows of one unit record."""
    desc = record.get("description") or {}
    return {"id": record["id"], "url": urls.make(store_url, "unit", record["id"]), "name": desc.get("name"),
            "state": record["state"], "pilot": record.get("pilot_id"), "service": record.get("cds_id"),
            "executable": desc.get("executable"), "exit_code": record.get("exit_code"), "host": record.get("host"),
            "sandbox": record.get("sandbox"), "submitted": record.get("submitted"), "started": record.get("started"),
            "finished": record.get("finished"), "attempts": record.get("attempts"), "reason": record.get("reason")}


def _handle(ctx: click.Context, url_or_id: str) -> tuple[CoordinationStore, ComputeUnit]:
    from pilot.compute import ComputeUnit

    store, _, unit_id = obj(ctx).locate(url_or_id, ("unit",))
    return store, ComputeUnit(urls.make(store.url, "unit", unit_id), session=obj(ctx).session)


@units.command("show")
@click.argument("url")
@json_option
@click.pass_context
def units_show(ctx: click.Context, url: str, as_json: bool) -> None:
    """Show one unit (URL, or an id in the chosen store)."""
    _, unit = _handle(ctx, url)
    details = unit.get_details()
    details["url"] = unit.get_url()
    if as_json:
        print_json(details)
    else:
        show(details_table(details, f"unit {unit.id}"))


@units.command("cancel")
@click.argument("url")
@click.pass_context
def units_cancel(ctx: click.Context, url: str) -> None:
    """Cancel a unit: a queued one ends at once, a running one is killed by its agent."""
    _, unit = _handle(ctx, url)
    unit.cancel()
    state = unit.get_state()
    click.echo(f"{unit.id} {state}" + ("" if state.is_final else " (cancel requested: its agent stops it)"))


@units.command("wait")
@click.argument("url")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Give up after this many seconds (exit 124).")
@click.pass_context
def units_wait(ctx: click.Context, url: str, timeout: float | None) -> int:
    """Wait until the unit is final; print its state.

    Exit 0 when Done, 3 when Failed or Canceled, 124 on timeout, 1 when no pilot can ever run it."""
    _, unit = _handle(ctx, url)
    try:
        state = unit.wait(timeout)
    except TimeoutError:
        click.echo(f"{unit.id} {unit.get_state()} (timed out)")
        return EXIT_TIMEOUT
    reason = unit.get_details()["reason"] if state is not State.Done else None
    click.echo(f"{unit.id} {state}" + (f": {reason}" if reason else ""))
    return EXIT_OK if state is State.Done else EXIT_FAILED


@units.command("logs")
@click.argument("url")
@click.option("--stderr", "error", is_flag=True, help="The unit's stderr file instead of its stdout.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing what is written until the unit is final.")
@click.pass_context
def units_logs(ctx: click.Context, url: str, error: bool, follow: bool) -> None:
    """Print a unit's stdout (or stderr) file from its sandbox."""
    store, unit = _handle(ctx, url)
    offset = 0
    while True:
        record = store.get_units([unit.id])[0]
        final = State(record["state"]) in FINAL_STATES
        path = log_path(record, error)
        if path is not None and os.path.exists(path):
            offset = _copy_from(path, offset)
        elif not follow or final:
            which = "stderr" if error else "stdout"
            where = f"{path} does not exist" if path else f"it has no sandbox yet (it is {record['state']})"
            raise PilotError(f"no {which} of unit {unit.id}: {where}")
        if not follow or final:
            return
        time.sleep(0.2)


def log_path(record: dict[str, Any], error: bool) -> str | None:
    """The unit's stdout (or stderr) file, once it has a sandbox."""
    sandbox = record.get("sandbox")
    if not sandbox:
        return None
    desc = record.get("description") or {}
    name = desc.get("error") or "stderr.txt" if error else desc.get("output") or "stdout.txt"
    return os.path.join(sandbox, name)


def _copy_from(path: str, offset: int) -> int:
    """Write ``path`` from ``offset`` to stdout; the new offset."""
    out = sys.stdout.buffer
    with Path(path).open("rb") as log:
        log.seek(offset)
        while chunk := log.read(1 << 16):
            out.write(chunk)
            offset += len(chunk)
    out.flush()
    return offset
