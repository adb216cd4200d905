"""Placement on the data side: which PilotData a ComputeDataService's data unit goes to, and
what the unit placement policy learns about a queued unit's input data (whether its DUs are
stored, and the labels of the PilotData holding them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pilot.data import records
from pilot.descriptions import DataUnitDescription
from pilot.errors import PilotError
from pilot.states import State
from pilot.store import Record

if TYPE_CHECKING:
    from pilot.data.objects import PilotData
    from pilot.session import Session
    from pilot.store import CoordinationStore

Labels = tuple[str | None, str | None]


def _matches(want: Labels, have: Labels) -> bool:
    """Labels match when every label wanted is equal (a datacenter alone matches any machine)."""
    return (want[0] is None or want[0] == have[0]) and (want[1] is None or want[1] == have[1])


def choose_pilot_data(session: Session, store: CoordinationStore, pds_ids: Sequence[str],
                      desc: DataUnitDescription) -> PilotData:
    """The PilotData for a new DU: among the live PilotData of the services, those whose labels
    match the DU's (all when none does), the one with the most room left."""
    from pilot.data.objects import PilotData

    pd_ids = [pd for pds in pds_ids for pd in store.children(pds)]
    live = [r for r in store.get_services(pd_ids) if r["data"].get("state") == State.Running]
    if not live:
        raise PilotError("no live PilotData in the pilot data services of this ComputeDataService "
                         "(add one with add_pilot_data_service)")
    want = (desc.affinity_datacenter_label, desc.affinity_machine_label)
    matching = [r for r in live if _matches(want, (r["data"].get("datacenter"), r["data"].get("machine")))]

    def room(r: Record) -> float:
        size = r["data"].get("size")
        return float("inf") if size is None else size - records.used_bytes(store, r["id"])

    chosen = max(matching or live, key=room)
    return PilotData(session=session, _store=store, _id=chosen["id"])


def replica_targets(session: Session, store: CoordinationStore, pds_ids: Sequence[str], desc: DataUnitDescription,
                    first_pd: str, *, default: int | None = None) -> list[PilotData]:
    """The further PilotData a new DU is replicated into, so that ``number_of_replicas`` (the
    DU's, else ``default``: its PilotData's) hold it: live PilotData of the services other than
    ``first_pd``, those matching the DU's labels first, most room first. ``PilotError`` when
    there are not enough."""
    from pilot.data.objects import PilotData

    wanted = (desc.number_of_replicas or default or 1) - 1
    if wanted <= 0:
        return []
    pd_ids = [pd for pds in pds_ids for pd in store.children(pds) if pd != first_pd]
    live = [r for r in store.get_services(pd_ids) if r["data"].get("state") == State.Running]
    if len(live) < wanted:
        raise PilotError(f"number_of_replicas is {wanted + 1} but only {len(live) + 1} live PilotData can hold "
                         "this data unit", key="number_of_replicas")
    want = (desc.affinity_datacenter_label, desc.affinity_machine_label)

    def order(r: Record) -> tuple[bool, float]:
        size = r["data"].get("size")
        room = float("inf") if size is None else size - records.used_bytes(store, r["id"])
        return (not _matches(want, (r["data"].get("datacenter"), r["data"].get("machine"))), -room)

    return [PilotData(session=session, _store=store, _id=r["id"]) for r in sorted(live, key=order)[:wanted]]


def input_data_views(session: Session, store: CoordinationStore, units: Sequence[Record]
                     ) -> dict[str, tuple[bool | str, list[Labels]]]:
    """For each unit with ``input_data``: ``(ready, labels)``. ``ready`` is True when every DU
    is stored (Running), False while one is being stored, or a reason string when one can never
    be; ``labels`` are those of the PilotData holding a complete replica of its DUs."""
    from pilot import urls

    wanted: dict[str, list[str]] = {}
    for unit in units:
        if unit.get("input_data"):
            wanted[unit["id"]] = [urls.parse(u, "data-unit").id for u in unit["input_data"]]
    found = {r["id"]: r["data"] for r in store.get_services(sorted({d for ds in wanted.values() for d in ds}))}
    out: dict[str, tuple[bool | str, list[Labels]]] = {}
    for unit_id, du_ids in wanted.items():
        ready: bool | str = True
        labels: list[Labels] = []
        for du_id in du_ids:
            data = found.get(du_id)
            if data is None:
                ready = f"input data unit {du_id} does not exist"
                break
            state = State(data["state"])
            if state.is_final:
                ready = f"input data unit {du_id} is {state}" + (f": {data['reason']}" if data.get("reason") else "")
                break
            if state is not State.Running:
                ready = False
            for replica in records.complete_replicas(data).values():
                label = (replica.get("datacenter"), replica.get("machine"))
                if label != (None, None) and label not in labels:
                    labels.append(label)
        out[unit_id] = (ready, labels)
    return out
