"""The rows of a timeline, read from the coordination store.

One row per unit (a plain dict, keys in ``ROW_KEYS``; times in epoch seconds, ``None`` when
the unit has not got that far):

- ``id``, ``pilot`` (pilot id or None), ``slot`` (index of the first slot it held on its pilot,
  or None when it never started), ``slots`` (how many it held), ``host``, ``state``,
  ``exit_code``, ``reason``, ``command`` (executable and arguments, one line);
- ``submitted``; ``staging_in`` (input staging began); ``started`` (the unit's process
  started); ``staging_out`` (output staging began); ``finished``.

Units do not record which slot they held: ``slot`` is computed here by packing each pilot's
units onto its slots in start order (a unit of k slots takes the lowest k contiguous free slots;
when no k free slots are contiguous, or the records overlap more than the pilot's slots, it
takes new rows past them). It is a faithful picture of how busy each pilot was, not of which
core ran what.
"""

from __future__ import annotations

import dataclasses
import heapq
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pilot import urls
from pilot.errors import PilotError
from pilot.session import Session, default_session
from pilot.store import CoordinationStore, Record

ROW_KEYS = ("id", "pilot", "slot", "slots", "host", "state", "exit_code", "reason", "command",
            "submitted", "staging_in", "started", "staging_out", "finished")
UNIT_COLUMNS = ("id", "pilot_id", "state", "slots", "description", "exit_code", "host", "reason",
                "submitted", "staging_in", "started", "staging_out", "finished")
Row = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class PilotSpan:
    """A pilot as the timeline draws it: ``rows`` slot rows from ``first_row`` on."""

    id: str
    state: str
    started: float | None
    finished: float | None
    first_row: int
    rows: int


@dataclasses.dataclass(frozen=True)
class Timeline:
    """The rows of one service's or pilot's units, its pilots and when it was read (``now``:
    where bars of unfinished units end)."""

    title: str
    rows: list[Row]
    pilots: list[PilotSpan]
    now: float

    @property
    def slot_rows(self) -> int:
        """Slot rows over all pilots."""
        return sum(p.rows for p in self.pilots)


def command_line(description: Mapping[str, Any] | None) -> str:
    """A unit's executable and arguments as one line."""
    desc = description or {}
    return " ".join(str(word) for word in [desc.get("executable") or "", *(desc.get("arguments") or [])]).strip()


def unit_begin(row: Mapping[str, Any]) -> float | None:
    """When the unit took its slots: input staging, else its start."""
    begin = row.get("staging_in")
    return begin if begin is not None else row.get("started")


def _take(free: list[int], count: int, next_new: int) -> tuple[int, int]:
    """The first of ``count`` contiguous slots taken from the sorted ``free`` list (the lowest
    such run; new rows from ``next_new`` on when there is none) and the new ``next_new``."""
    if count == 1 and free:
        return free.pop(0), next_new
    for start in range(len(free) - count + 1):
        if free[start + count - 1] - free[start] == count - 1:
            first = free[start]
            del free[start:start + count]
            return first, next_new
    return next_new, next_new + count


def pack_slots(rows: Sequence[Row], slots: int, now: float) -> int:
    """Set ``slot`` on the rows of one pilot (see the module docstring); the rows it needs."""
    started = sorted((r for r in rows if unit_begin(r) is not None), key=lambda r: (unit_begin(r), r["id"]))
    free = list(range(slots))
    busy: list[tuple[float, list[int]]] = []  # (end, slots held), a heap
    next_new = slots
    for row in started:
        begin = unit_begin(row)
        assert begin is not None
        while busy and busy[0][0] <= begin:
            free.extend(heapq.heappop(busy)[1])
        free.sort()
        count = max(1, int(row.get("slots") or 1))
        first, next_new = _take(free, count, next_new)
        row["slot"] = first
        end = row.get("finished")
        heapq.heappush(busy, (max(begin, end if end is not None else now), list(range(first, first + count))))
    return next_new


def build_timeline(title: str, pilots: Iterable[Record], units: Iterable[Record],
                   now: float | None = None) -> Timeline:
    """A timeline from pilot and unit records (units in submission order)."""
    now = time.time() if now is None else now
    rows: list[Row] = []
    by_pilot: dict[str, list[Row]] = {}
    for unit in units:
        row: Row = {
            "id": unit["id"], "pilot": unit.get("pilot_id"), "slot": None, "slots": int(unit.get("slots") or 1),
            "host": unit.get("host"), "state": str(unit["state"]), "exit_code": unit.get("exit_code"),
            "reason": unit.get("reason"), "command": command_line(unit.get("description")),
            "submitted": unit.get("submitted"), "staging_in": unit.get("staging_in"),
            "started": unit.get("started"), "staging_out": unit.get("staging_out"), "finished": unit.get("finished"),
        }
        rows.append(row)
        if row["pilot"] is not None:
            by_pilot.setdefault(row["pilot"], []).append(row)
    records = {p["id"]: p for p in pilots}
    spans: list[PilotSpan] = []
    first_row = 0
    for pilot_id in [*records, *(p for p in by_pilot if p not in records)]:
        record = records.get(pilot_id, {})
        needed = pack_slots(by_pilot.get(pilot_id, []), int(record.get("slots") or 0), now)
        count = max(needed, int(record.get("slots") or 0), 1)
        spans.append(PilotSpan(pilot_id, str(record.get("state") or "unknown"), record.get("started"),
                               record.get("finished"), first_row, count))
        first_row += count
    return Timeline(title, rows, spans, now)


def timeline_of(store: CoordinationStore, *, cds_id: str | None = None, pcs_id: str | None = None,
                pilot_id: str | None = None) -> Timeline:
    """The timeline of a ComputeDataService (its units, on whichever pilots ran them), of a
    PilotComputeService (the units of its pilots) or of one pilot."""
    now = time.time()
    if cds_id is not None:
        from pilot.binding import pcs_of

        units = store.find_units(cds_id=cds_id, fields=UNIT_COLUMNS)
        pilots = store.pilots_of(pcs_of(store, cds_id))
        known = {p["id"] for p in pilots}
        pilots += store.get_pilots(list(dict.fromkeys(
            u["pilot_id"] for u in units if u["pilot_id"] is not None and u["pilot_id"] not in known)))
        return build_timeline(f"service {cds_id}", pilots, units, now)
    if pcs_id is not None:
        pilots = store.pilots_of([pcs_id])
        title = f"pilot service {pcs_id}"
    elif pilot_id is not None:
        pilots = store.get_pilots([pilot_id])
        if not pilots:
            raise PilotError(f"no pilot {pilot_id} in {store.url}")
        title = f"pilot {pilot_id}"
    else:
        raise PilotError("timeline_of needs cds_id, pcs_id or pilot_id")
    units = [u for p in pilots for u in store.find_units(pilot_id=p["id"], fields=UNIT_COLUMNS)]
    units.sort(key=lambda u: (u.get("submitted") or 0.0))
    return build_timeline(title, pilots, units, now)


_KINDS = {"cds": "cds_id", "pcs": "pcs_id", "pilot": "pilot_id"}


def load_timeline(url: str, store_url: str | None = None, session: Session | None = None) -> Timeline:
    """The timeline of the object at ``url``: an object URL of a ComputeDataService, a
    PilotComputeService or a pilot (``<store>#cds/<id>``), or a bare id (``cds-...``,
    ``pcs-...``, ``pilot-...``) in the store at ``store_url`` (default: the default store)."""
    session = session or default_session()
    if "#" in url:
        kind = url.partition("#")[2].partition("/")[0]
        if kind not in _KINDS:
            raise PilotError(f"a timeline is drawn for a service or a pilot (cds, pcs, pilot), not {kind!r}")
        parsed = urls.parse(url, kind)
        store = session.store(store_url or parsed.store_url, create=False)
        object_id = parsed.id
    else:
        kind = url.partition("-")[0]
        if kind not in _KINDS or not url.partition("-")[2]:
            raise PilotError(f"not a service or pilot URL or id: {urls.redact(url)!r} "
                             "(expected '<store url>#cds/<id>', '#pcs/<id>', '#pilot/<id>' or a bare id)")
        store = session.store(store_url, create=False) if store_url else session.store()
        object_id = url
    if kind == "cds":
        found = store.get_service(object_id)
        if found is None or found["kind"] != "cds":
            raise PilotError(f"no compute data service {object_id} in {store.url}")
    if kind == "pcs":
        found = store.get_service(object_id)
        if found is None or found["kind"] != "pcs":
            raise PilotError(f"no pilot compute service {object_id} in {store.url}")
    return timeline_of(store, **{_KINDS[kind]: object_id})
