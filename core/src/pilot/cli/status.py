"""``pilot status``: a one-screen summary of a store (pilots by state with slots in use, units
by state, the oldest queued unit and why it waits); ``pilot watch``: the same, live.

A summary costs a few store queries whatever the number of units (``count_units``, one
``find_units`` of one unit): nothing is done per unit in Python."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click

from pilot.cli import EXIT_OK
from pilot.cli.context import obj
from pilot.cli.output import cell, console, json_option, print_json, show, state_text, table
from pilot.states import ACTIVE_UNIT_STATES, LIVE_PILOT_STATES, QUEUED_UNIT_STATES, STARTED_UNIT_STATES, State
from pilot.store import CoordinationStore, Record

if TYPE_CHECKING:
    from rich.console import RenderableType

_OLDEST_FIELDS = ("id", "cds_id", "pilot_id", "state", "slots", "datacenter", "machine", "input_data", "submitted")
_ACTIVE = frozenset(s.value for s in ACTIVE_UNIT_STATES)


def summary(store: CoordinationStore, *, cds_id: str | None = None, pilot_id: str | None = None,
            unit_id: str | None = None) -> dict[str, Any]:
    """What ``status`` shows, as one JSON-ready document; limited to a service, pilot or unit when given.
    ``held``: slots of the unfinished units bound to the pilots (running and prefetched)."""
    pilot_records = store.get_pilots([pilot_id]) if pilot_id else store.find_pilots()
    live = [p["id"] for p in pilot_records if State(p["state"]) in LIVE_PILOT_STATES]
    in_use = store.count_active(live) if live else {}
    pilots: dict[str, dict[str, int]] = {}
    for record in pilot_records:
        entry = pilots.setdefault(record["state"], {"pilots": 0, "slots": 0, "held": 0})
        entry["pilots"] += 1
        entry["slots"] += int(record.get("slots") or 0)
        entry["held"] += in_use.get(record["id"], 0)
    if unit_id:
        found = store.get_units([unit_id])
        units = {found[0]["state"]: 1} if found else {}
        queued = [u for u in found if u["state"] in QUEUED_UNIT_STATES]
    else:
        units = store.count_units(cds_id=cds_id, pilot_id=pilot_id)
        queued = store.find_units(cds_id=cds_id, pilot_id=pilot_id, states=QUEUED_UNIT_STATES, limit=1,
                                  fields=_OLDEST_FIELDS) if any(units.get(s, 0) for s in QUEUED_UNIT_STATES) else []
    oldest = None
    if queued:
        oldest = {"id": queued[0]["id"], "state": queued[0]["state"], "submitted": queued[0].get("submitted"),
                  "waits_because": why_waiting(store, queued[0])}
    return {"store": store.url, "pilots": pilots, "units": units, "units_total": sum(units.values()),
            "units_active": sum(n for s, n in units.items() if s in _ACTIVE), "oldest_queued": oldest}


def why_waiting(store: CoordinationStore, unit: Record) -> str:
    """One line: why a queued unit is not running yet."""
    from pilot.plugin.manager import blocked_from_env

    blocked = blocked_from_env()
    hint = f" (plugins blocked by PILOT_DISABLE_PLUGINS: {', '.join(sorted(blocked))})" if blocked else ""
    if unit.get("pilot_id"):
        found = store.get_pilots([unit["pilot_id"]])
        if not found:
            return f"bound to pilot {unit['pilot_id']}, which is not in the store"
        pilot = found[0]
        if pilot["state"] != State.Running:
            return f"bound to pilot {pilot['id']}, which is {pilot['state']}" + (
                " (still in its batch queue)" if pilot["state"] in (State.New, State.Pending) else "") + hint
        counts = store.count_units(pilot_id=pilot["id"])
        busy = sum(counts.get(s, 0) for s in STARTED_UNIT_STATES)
        return (f"claimed by pilot {pilot['id']}; it starts when one of its {pilot.get('slots')} slots frees "
                f"({busy} units running there)")
    if not unit.get("cds_id"):
        return "bound to no pilot and no service"
    from pilot.binding import pilots_of_services
    from pilot.service import unrunnable_reason

    reason = unrunnable_reason(store, unit["cds_id"], [unit])
    if reason:
        return reason + hint
    live = pilots_of_services(store, [unit["cds_id"]])
    missing = _missing_input(store, unit)
    if missing:
        return missing
    for label in ("datacenter", "machine"):
        if unit.get(label) and not any(p.get(label) == unit[label] for p in live):
            return f"it asks for {label} {unit[label]!r}, which no live pilot of its service has"
    running = [p for p in live if p["state"] == State.Running]
    if not running:
        return f"its service's {len(live)} live pilots are all still queued in their batch systems"
    slots = sum(int(p.get("slots") or 0) for p in running)
    started = sum(n for p in running for s, n in store.count_units(pilot_id=p["id"]).items()
                  if s in STARTED_UNIT_STATES)
    if sum(store.count_active([p["id"] for p in running]).values()) >= slots:
        return f"every slot of its service's running pilots is taken ({started} units running on {slots} slots)"
    return f"waiting to be claimed by a running pilot ({started} units running on {slots} slots)"


def _missing_input(store: CoordinationStore, unit: Record) -> str | None:
    for du_id in unit.get("input_data") or ():
        record = store.get_service(du_id)
        state = (record or {}).get("data", {}).get("state")
        if state != State.Running:
            return f"its input data unit {du_id} is {state or 'not in the store'} (not stored yet)"
    return None


def render(doc: dict[str, Any], title: str) -> RenderableType:
    """The summary as rich tables: pilots, units, the oldest queued unit."""
    from rich.console import Group
    from rich.text import Text

    pilots: RenderableType = Text("no pilots")
    if doc["pilots"]:
        pilots = table("pilots", "state", "slots", "slots held", title=f"{title}: pilots")
        for state, entry in sorted(doc["pilots"].items()):
            pilots.add_row(str(entry["pilots"]), state_text(state), str(entry["slots"]), str(entry["held"]))
    units: RenderableType = Text("no units")
    if doc["units"]:
        units = table("units", "state", title=f"{title}: units ({doc['units_total']}, {doc['units_active']} active)")
        for state, count in sorted(doc["units"].items(), key=lambda item: list(State).index(State(item[0]))):
            units.add_row(str(count), state_text(state))
    oldest = doc["oldest_queued"]
    line = (Text.from_markup(f"oldest queued unit: {cell(oldest['id'])} ({oldest['state']}): "
                             f"{cell(oldest['waits_because'])}") if oldest else Text("no unit is queued"))
    return Group(pilots, units, line)


@click.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """One-screen summary of the store: pilots by state with slots in use, units by state, the
    oldest queued unit and why it waits."""
    store = obj(ctx).store()
    doc = summary(store)
    if as_json:
        print_json(doc)
    else:
        show(render(doc, "store"))


@click.command()
@click.argument("url", required=False)
@click.option("--interval", type=click.FloatRange(min=0.05), default=0.5, show_default=True, metavar="SECONDS",
              help="Seconds between two redraws.")
@click.pass_context
def watch(ctx: click.Context, url: str | None, interval: float) -> int:
    """Show the status live until every unit watched is final, then the final summary.

    URL: a compute data service, a pilot or a unit (URL or id); without it, the whole store.
    Exits 0 when everything watched is final, 130 on Ctrl-C."""
    from rich.live import Live

    context = obj(ctx)
    scope: dict[str, str] = {}
    if url:
        store, kind, object_id = context.locate(url, ("cds", "pilot", "unit"))
        scope = {{"cds": "cds_id", "pilot": "pilot_id", "unit": "unit_id"}[kind]: object_id}
        title = f"{kind} {object_id}"
    else:
        store, title = context.store(), "store"
    out = console()
    doc = summary(store, **scope)
    with Live(render(doc, title), console=out, transient=True, auto_refresh=False) as live:
        while doc["units_active"]:
            time.sleep(interval)
            doc = summary(store, **scope)
            live.update(render(doc, title), refresh=True)
    show(render(doc, title))
    return EXIT_OK
