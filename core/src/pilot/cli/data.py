"""``pilot services`` (pilot compute services, compute data services, pilot data services) and
``pilot data`` (PilotData and DataUnits).

Services are listed with the store's ``find_services``."""

from __future__ import annotations

from typing import Any

import click

from pilot import urls
from pilot.cli.context import obj
from pilot.cli.output import details_table, json_option, print_json, rows_table, show
from pilot.store import CoordinationStore, Record

SERVICE_KINDS = ("pcs", "cds", "pds")
DATA_KINDS = ("pilot-data", "data-unit")
SERVICE_COLUMNS = (("id", "service"), ("kind", "kind"), ("state", "state"), ("summary", "holds"))
DATA_COLUMNS = (("id", "data"), ("kind", "kind"), ("state", "state"), ("summary", "holds"), ("reason", "reason"))


def reachable(store: CoordinationStore) -> dict[str, Record]:
    """Every service record of the store (``find_services``), by id."""
    return {record["id"]: record for record in store.find_services()}


def service_row(store: CoordinationStore, record: Record) -> dict[str, Any]:
    """What ``services ls`` shows of one service record."""
    kind, data = record["kind"], record["data"]
    row: dict[str, Any] = {"id": record["id"], "url": urls.make(store.url, kind, record["id"]), "kind": kind,
                           "state": "Canceled" if data.get("canceled") else None}
    children = store.children(record["id"])
    if kind == "pcs":
        pilots = store.pilots_of([record["id"]])
        row["pilots"] = len(pilots)
        row["summary"] = f"{len(pilots)} pilots"
    elif kind == "cds":
        counts = store.count_units(cds_id=record["id"])
        row["units"] = counts
        row["pilot_compute_services"] = [c for c in children if c.startswith("pcs-")]
        row["summary"] = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no units"
    else:
        row["pilot_data"] = children
        row["summary"] = f"{len(children)} pilot data"
    return row


def data_row(store: CoordinationStore, record: Record) -> dict[str, Any]:
    """What ``data ls`` shows of one PilotData or DataUnit record."""
    from pilot.data import records as rec

    kind, data = record["kind"], record["data"]
    row: dict[str, Any] = {"id": record["id"], "url": urls.make(store.url, kind, record["id"]), "kind": kind,
                           "state": data.get("state"), "reason": data.get("reason")}
    if kind == "pilot-data":
        row["place"] = data.get("place")
        row["summary"] = data.get("place")
    else:
        files = rec.files_of(data)
        row["files"] = len(files)
        row["size"] = sum(int(f.get("size") or 0) for f in files.values())
        row["replicas"] = {pd: r.get("state") for pd, r in rec.replicas_of(data).items()}
        row["summary"] = f"{len(files)} files, {row['size']} bytes, {len(row['replicas'])} replicas"
    return row


@click.group()
def services() -> None:
    """Pilot compute services, compute data services and pilot data services: ls, show."""


@services.command("ls")
@json_option
@click.pass_context
def services_ls(ctx: click.Context, as_json: bool) -> None:
    """List the services that hold pilots, units or data."""
    store = obj(ctx).store()
    rows = [service_row(store, r) for r in reachable(store).values() if r["kind"] in SERVICE_KINDS]
    if as_json:
        print_json(rows)
    else:
        show(rows_table(rows, SERVICE_COLUMNS))


@services.command("show")
@click.argument("url")
@json_option
@click.pass_context
def services_show(ctx: click.Context, url: str, as_json: bool) -> None:
    """Show one service (URL, or an id in the chosen store)."""
    from pilot.compute import PilotComputeService
    from pilot.data.objects import PilotDataService
    from pilot.service import ComputeDataService

    context = obj(ctx)
    store, kind, service_id = context.locate(url, SERVICE_KINDS)
    full = urls.make(store.url, kind, service_id)
    details: dict[str, Any]
    if kind == "cds":
        details = ComputeDataService(cds_url=full, session=context.session).get_details()
    elif kind == "pcs":
        pcs = PilotComputeService(pcs_url=full, session=context.session)
        details = {"id": service_id, "url": full, "heartbeat_timeout": pcs.heartbeat_timeout,
                   "pilots": [p.get_url() for p in pcs.list_pilots()]}
    else:
        pds = PilotDataService(pds_url=full, session=context.session)
        details = {"id": service_id, "url": full, "pilot_data": [p.get_url() for p in pds.list_pilots()]}
    if as_json:
        print_json(details)
    else:
        show(details_table(details, f"{kind} {service_id}"))


@click.group()
def data() -> None:
    """PilotData and DataUnits: ls, show."""


@data.command("ls")
@json_option
@click.pass_context
def data_ls(ctx: click.Context, as_json: bool) -> None:
    """List the PilotData and DataUnits of the services that hold pilots, units or data."""
    store = obj(ctx).store()
    rows = [data_row(store, r) for r in reachable(store).values() if r["kind"] in DATA_KINDS]
    if as_json:
        print_json(rows)
    else:
        show(rows_table(rows, DATA_COLUMNS))


@data.command("show")
@click.argument("url")
@json_option
@click.pass_context
def data_show(ctx: click.Context, url: str, as_json: bool) -> None:
    """Show one PilotData or DataUnit (URL, or an id in the chosen store)."""
    from pilot.data.objects import DataUnit, PilotData

    context = obj(ctx)
    store, kind, object_id = context.locate(url, DATA_KINDS)
    full = urls.make(store.url, kind, object_id)
    details = (PilotData(full, session=context.session) if kind == "pilot-data"
               else DataUnit(full, session=context.session)).get_details()
    details["url"] = full
    if as_json:
        print_json(details)
    else:
        show(details_table(details, f"{kind} {object_id}"))
