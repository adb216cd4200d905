"""Late binding, shared by the agents that pull units and the client that places them when its
session has a placement policy of its own: which pilots may take which queued units now.

A unit is bound only to a ``Running`` pilot with room for it: its slots plus a prefetch of at
most ``PREFETCH_PER_SLOT`` units per slot (an agent prefetches less: no more than
``PREFETCH_SECONDS`` of work at its recent start rate, at least one unit per slot). A pilot
still queued in its batch system gets nothing, so the affinity rule (a unit waits while a
matching pilot is alive) is kept by showing it to the policy with no room."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pilot.plugin.types import PilotView, UnitView
from pilot.states import LIVE_PILOT_STATES, State
from pilot.store import CoordinationStore, Record
from pilot.transitions import UnitChange

if TYPE_CHECKING:
    from pilot.session import Session

#: Most units a pilot is given beyond its slots, per slot.
PREFETCH_PER_SLOT = 32
#: An agent prefetches no more than this many seconds of work at its recent start rate.
PREFETCH_SECONDS = 0.2
#: A unit an agent claimed but has not started within this many seconds goes back to the service.
HOLD_SECONDS = 1.0
#: The plugin name of the built-in placement policy.
DEFAULT_POLICY = "placement"
QUEUE_FIELDS = ("id", "slots", "datacenter", "machine", "input_data")


def capacity(slots: int) -> int:
    """Most slots' worth of unfinished units a pilot of ``slots`` slots may hold."""
    return slots * (1 + PREFETCH_PER_SLOT)


def custom_policy(session: Session) -> bool:
    """Whether a plugin other than the built-in one answers ``pilot_place_unit`` in ``session``."""
    return any(name != DEFAULT_POLICY for name in session.plugins.implementers("pilot_place_unit"))


def pcs_of(store: CoordinationStore, cds_id: str) -> list[str]:
    """The pilot compute services linked under a ComputeDataService."""
    return [child for child in store.children(cds_id) if child.startswith("pcs-")]


def pilots_of_services(store: CoordinationStore, cds_ids: Sequence[str]) -> list[Record]:
    """The live pilots of the pilot compute services of these ComputeDataServices."""
    pcs_ids = list(dict.fromkeys(p for cds in cds_ids for p in pcs_of(store, cds)))
    return [p for p in store.pilots_of(pcs_ids) if State(p["state"]) in LIVE_PILOT_STATES]


def pilot_views(store: CoordinationStore, pilots: Sequence[Record]) -> list[PilotView]:
    """Policy views of ``pilots``: Running ones with their room, the others with none."""
    running = [p["id"] for p in pilots if p["state"] == State.Running]
    used = store.count_active(running) if running else {}
    return [PilotView(p["id"], State(p["state"]), int(p.get("slots") or 0),
                      capacity(int(p.get("slots") or 0)) - used[p["id"]] if p["id"] in used else 0,
                      p.get("datacenter"), p.get("machine"))
            for p in pilots]


def choose(session: Session, store: CoordinationStore, units: Sequence[Record], views: Sequence[PilotView]
           ) -> tuple[list[tuple[str, str]], list[UnitChange]]:
    """Ask the placement policy for each queued unit, oldest first. Returns the bindings
    ``(unit id, pilot id)`` it chose among pilots with room (each binding takes the unit's slots
    from its pilot's room for the next question), and the failures of units whose input data
    can never be stored."""
    free = {v.id: v.free for v in views}
    place_unit = session.plugins.place_unit
    data_views: dict[str, Any] = {}
    if any(unit.get("input_data") for unit in units):
        from pilot.data.placement import input_data_views

        data_views = input_data_views(session, store, units)
    bindings: list[tuple[str, str]] = []
    failed: list[UnitChange] = []
    for unit in units:
        if not free or max(free.values()) <= 0:
            break  # every pilot is full: the rest waits
        labels: Any = ()
        if unit.get("input_data"):
            ready, labels = data_views[unit["id"]]
            if isinstance(ready, str):  # a DU of the unit can never be stored: fail the unit
                failed.append(UnitChange(unit["id"], State.Failed, {"reason": ready, "finished": time.time()},
                                         only_from=(State.Pending,)))
            if ready is not True:
                continue
        view = UnitView(unit["id"], int(unit["slots"]), unit.get("datacenter"), unit.get("machine"),
                        tuple(unit.get("input_data") or ()), tuple(labels))
        candidates = [PilotView(v.id, v.state, v.slots, free.get(v.id, 0), v.datacenter, v.machine)
                      for v in views if v.slots >= view.slots]
        chosen = place_unit(view, candidates) if candidates else None
        if chosen in free and free[chosen] >= view.slots:
            bindings.append((unit["id"], chosen))
            free[chosen] -= view.slots
    return bindings, failed
