"""The coordination store: the only channel between clients and agents.

Every store (the embedded SQLite one here, Redis in ``pilot-redis``) implements
``CoordinationStore`` and passes ``pilot.testing.store_conformance``. Records are plain dicts
with the fields below; ``description`` and ``hosts`` hold JSON-ready values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pilot.states import ACTIVE_UNIT_STATES, State

Record = dict[str, Any]

PILOT_FIELDS = (
    "id", "service_id", "state", "description", "sandbox", "scheme", "native_id", "slots", "hosts",
    "datacenter", "machine", "submitted", "started", "finished", "heartbeat", "heartbeat_timeout",
    "reason", "cancel_requested", "agent_host", "agent_pid",
)
UNIT_FIELDS = (
    "id", "cds_id", "pilot_id", "state", "claimed", "slots", "description", "datacenter", "machine",
    "exit_code", "host", "sandbox", "submitted", "started", "finished", "reason", "cancel_requested",
    "attempts", "input_data", "staging_in", "staging_out",
)
JSON_FIELDS = frozenset({"description", "hosts", "input_data"})
__all__ = ["ACTIVE_UNIT_STATES", "CoordinationStore", "Record", "UnitUpdate", "change_marker"]


@dataclasses.dataclass(frozen=True)
class UnitUpdate:
    """Set ``changes`` on unit ``id``, only while its state is one of ``expect`` (any if None)
    and, when ``pilot_id`` is given, only while the unit is bound to that pilot."""

    id: str
    changes: Mapping[str, Any]
    expect: Sequence[State] | None = None
    pilot_id: str | None = None


class CoordinationStore(Protocol):
    """What the core needs of a store. Writes of many records are one round trip."""

    url: str

    def close(self) -> None:
        """Release connections."""

    def put_service(self, service_id: str, kind: str, data: Mapping[str, Any]) -> None:
        """Create or replace a service record."""

    def get_service(self, service_id: str) -> Record | None:
        """A service record (``id``, ``kind``, ``data``), or None."""

    def get_services(self, ids: Sequence[str]) -> list[Record]:
        """Service records by id, in the order asked (missing ones left out)."""

    def find_services(self, kinds: Sequence[str] | None = None) -> list[Record]:
        """Every service record (of ``kinds`` when given), in no particular order; for listings
        (``pilot services ls``), not for the hot path."""

    def update_service(self, service_id: str, changes: Mapping[str, Any],
                       expect: Sequence[State] | None = None) -> bool:
        """Merge ``changes`` into a service record's ``data``, atomically, only while
        ``data["state"]`` is one of ``expect`` (any if None); True when applied. Data objects
        (pilot data, data units) are service records with a state."""

    def link(self, parent: str, child: str) -> None:
        """Record that service ``parent`` uses service ``child`` (a CDS and its PCS)."""

    def unlink(self, parent: str, child: str) -> None:
        """Remove a link."""

    def children(self, parent: str) -> list[str]:
        """Services linked under ``parent``, in link order."""

    def insert_pilot(self, record: Mapping[str, Any]) -> None:
        """Insert a new pilot."""

    def get_pilots(self, ids: Sequence[str]) -> list[Record]:
        """Pilots by id (missing ones left out)."""

    def pilots_of(self, service_ids: Sequence[str]) -> list[Record]:
        """Every pilot of these pilot compute services, oldest first."""

    def find_pilots(self, states: Sequence[State] | None = None) -> list[Record]:
        """Every pilot in the store (in one of ``states`` when given), oldest first."""

    def update_pilot(self, pilot_id: str, changes: Mapping[str, Any],
                     expect: Sequence[State] | None = None) -> bool:
        """Apply ``changes`` if the pilot's state is in ``expect``; True when applied."""

    def heartbeat(self, pilot_id: str, now: float) -> Record | None:
        """Record the agent's heartbeat; return the pilot (state, cancel_requested)."""

    def insert_units(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Insert many units at once, in order."""

    def get_units(self, ids: Sequence[str]) -> list[Record]:
        """Units by id (missing ones left out)."""

    def find_units(self, *, cds_id: str | None = None, pilot_id: str | None = None,
                   states: Sequence[State] | None = None, unbound: bool = False,
                   cancel_requested: bool = False, limit: int | None = None,
                   fields: Sequence[str] | None = None, constrained: bool = False) -> list[Record]:
        """Units matching every given filter, in submission order; only ``fields`` when given.
        ``constrained``: only units with an affinity label or ``input_data`` (stores keep an
        index of the queued ones, so agents find them among many plain units at once)."""

    def count_active(self, pilot_ids: Sequence[str]) -> dict[str, int]:
        """Slots held by unfinished units bound to each pilot."""

    def count_units(self, *, cds_id: str | None = None, pilot_id: str | None = None) -> dict[str, int]:
        """How many units are in each state (state value -> count; states with none left out),
        of one service, of one pilot, or of the whole store: one query, no unit decoded."""

    def update_units(self, updates: Sequence[UnitUpdate]) -> dict[str, str]:
        """Apply many conditional updates at once; return, for each unit where an update
        applied, the state it had before (in the order of ``updates``)."""

    def bind_units(self, bindings: Sequence[tuple[str, str]]) -> list[str]:
        """Bind queued, unbound units to pilots (``(unit_id, pilot_id)``); return those bound."""

    def unbind_units(self, pilot_id: str, ids: Sequence[str] | None = None) -> list[str]:
        """Return the pilot's queued service units (claimed or not, never started; only those
        in ``ids`` when given) to their service: unbound and unclaimed; return their ids.
        Direct units (no ``cds_id``) stay."""

    def claim_units(self, pilot_id: str, limit: int, services: Sequence[str] = (),
                    max_slots: int | None = None) -> list[Record]:
        """Atomically claim up to ``limit`` Pending, unclaimed units, oldest first: first those
        bound to ``pilot_id``, then unbound units of the compute data services ``services``
        that carry no placement constraint (no affinity label, no ``input_data``) and need at
        most ``max_slots`` slots. A claimed unit is bound to ``pilot_id``. A unit is claimed by
        one agent only, until it is handed back with ``unbind_units``."""

    def wait_for_change(self, since: int | None, timeout: float) -> int:
        """The store's change marker. With ``since`` None, the current one, at once. Else block
        until the store has changed since marker ``since`` was read (a write by any client or
        agent; at the least, every write to units, pilots or services), or until ``timeout``
        seconds have passed, and return the current marker.

        Markers are opaque ints, compared only for equality. An early return without a change is
        allowed, a missed change is not: a change made after ``since`` was read ends the wait (at
        once, when made before this call) with a marker other than ``since``. So ``wait()``
        blocks instead of polling: it reads the marker, looks at the store, then waits for a
        change from that marker. Store failures raise as in other calls."""


def change_marker(store: CoordinationStore, since: int | None, timeout: float) -> int | None:
    """``store.wait_for_change(since, timeout)``, or None for a store plugin written before
    the method existed (its callers then poll, as they did)."""
    wait = getattr(store, "wait_for_change", None)
    return None if wait is None else int(wait(since, timeout))
