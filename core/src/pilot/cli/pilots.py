"""``pilot pilots``: list, show, cancel and wait for pilots."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from pilot import urls
from pilot.cli import EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT
from pilot.cli.context import obj
from pilot.cli.output import details_table, json_option, print_json, rows_table, show
from pilot.states import LIVE_PILOT_STATES, State
from pilot.store import CoordinationStore

if TYPE_CHECKING:
    from pilot.compute import PilotCompute

PILOT_COLUMNS = (("id", "pilot"), ("state", "state"), ("service_url", "service URL"), ("slots", "slots"),
                 ("in_use", "in use"), ("submitted", "submitted"), ("reason", "reason"))


@click.group()
def pilots() -> None:
    """Pilots in the store: ls, show, cancel, wait."""


@pilots.command("ls")
@click.option("--state", "states", multiple=True, type=click.Choice([s.value for s in State], case_sensitive=False),
              help="Only pilots in this state (repeat for several).")
@json_option
@click.pass_context
def pilots_ls(ctx: click.Context, states: tuple[str, ...], as_json: bool) -> None:
    """List every pilot, oldest first, with the slots its unfinished units hold."""
    store = obj(ctx).store()
    wanted = [State(s.capitalize()) for s in states] or None
    records = store.find_pilots(wanted)
    live = [p["id"] for p in records if State(p["state"]) in LIVE_PILOT_STATES]
    in_use = store.count_active(live) if live else {}
    rows = [pilot_row(store.url, p, in_use.get(p["id"])) for p in records]
    if as_json:
        print_json(rows)
    else:
        show(rows_table(rows, PILOT_COLUMNS))


def pilot_row(store_url: str, record: dict[str, Any], in_use: int | None) -> dict[str, Any]:
    """What ``pilots ls`` shows of one pilot record."""
    desc = record.get("description") or {}
    return {"id": record["id"], "url": urls.make(store_url, "pilot", record["id"]), "state": record["state"],
            "service_url": desc.get("service_url"), "native_id": record.get("native_id"),
            "slots": record.get("slots"), "in_use": in_use, "submitted": record.get("submitted"),
            "started": record.get("started"), "finished": record.get("finished"), "reason": record.get("reason")}


def _handle(ctx: click.Context, url_or_id: str) -> tuple[CoordinationStore, PilotCompute]:
    from pilot.compute import PilotCompute

    store, _, pilot_id = obj(ctx).locate(url_or_id, ("pilot",))
    return store, PilotCompute(urls.make(store.url, "pilot", pilot_id), session=obj(ctx).session)


@pilots.command("show")
@click.argument("url")
@json_option
@click.pass_context
def pilots_show(ctx: click.Context, url: str, as_json: bool) -> None:
    """Show one pilot (URL, or an id in the chosen store): its details and units by state."""
    store, pilot = _handle(ctx, url)
    details = pilot.get_details()
    details["url"] = pilot.get_url()
    details["units"] = store.count_units(pilot_id=pilot.id)
    if as_json:
        print_json(details)
    else:
        show(details_table(details, f"pilot {pilot.id}"))


@pilots.command("cancel")
@click.argument("url")
@click.pass_context
def pilots_cancel(ctx: click.Context, url: str) -> None:
    """Cancel a pilot: its batch job ends, its units end Canceled (restartable ones are queued again)."""
    _, pilot = _handle(ctx, url)
    pilot.cancel()
    click.echo(f"{pilot.id} {pilot.get_state()}")


@pilots.command("wait")
@click.argument("url")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Give up after this many seconds (exit 124).")
@click.pass_context
def pilots_wait(ctx: click.Context, url: str, timeout: float | None) -> int:
    """Wait until every unit bound to the pilot is final, or the pilot itself is; print its state.

    Exit 0 when the pilot is idle or Done, 3 when it ended Failed or Canceled, 124 on timeout."""
    _, pilot = _handle(ctx, url)
    try:
        state = pilot.wait(timeout)
    except TimeoutError:
        click.echo(f"{pilot.id} {pilot.get_state()} (timed out)")
        return EXIT_TIMEOUT
    click.echo(f"{pilot.id} {state}")
    return EXIT_FAILED if state in (State.Failed, State.Canceled) else EXIT_OK
