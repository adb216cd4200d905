"""Client-side lifecycle rules shared by every handle: pilot liveness, pilot failure and cancel,
unit cancel. Every write is conditional on the state it expects, so clients and agents racing on
the same record never overwrite a final state."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pilot.log import get_logger
from pilot.states import FINAL_STATES, Kind, State
from pilot.store import Record, UnitUpdate

LIVE_PILOT_STATES = (State.New, State.Pending, State.Running)
QUEUED_UNIT_STATES = (State.New, State.Pending)
STARTED_UNIT_STATES = (State.Staging, State.Running)
_STATUS_EVERY = 1.0  # seconds between two batch-system status queries for one pilot


def notify(session: Any, kind: Kind, entity_id: str, old: State | str, new: State | str) -> None:
    """Tell ``pilot_state_changed`` observers about a change made in this process."""
    try:
        session.plugins.hook.pilot_state_changed(kind=kind, entity_id=entity_id, old=State(old), new=State(new))
    except Exception:  # observers must not break the caller
        get_logger().exception("pilot_state_changed observer failed", entity=entity_id)


def refresh_pilot(session: Any, store: Any, record: Record) -> Record:
    """Check a live pilot against its heartbeat and its batch job; fail it when it is dead.
    Returns the pilot's current record."""
    if State(record["state"]) in FINAL_STATES:
        return record
    now = time.time()
    timeout = float(record.get("heartbeat_timeout") or 60.0)
    heartbeat = record.get("heartbeat")
    if record["state"] == State.Running and heartbeat and now - heartbeat > timeout:
        return fail_pilot(session, store, record,
                          f"agent silent for {now - heartbeat:.0f} s (heartbeat timeout {timeout:g} s)")
    native_id = record.get("native_id")
    asked = session.status_asked  # pilot id -> when this session last asked its batch system
    if native_id and now - asked.get(record["id"], 0.0) >= _STATUS_EVERY:
        asked[record["id"]] = now
        try:
            status = session.adaptor(record["description"]["service_url"]).status(native_id)
        except Exception as exc:  # an adaptor that cannot answer here leaves the heartbeat to decide
            get_logger().debug("pilot status unavailable", pilot=record["id"], error=str(exc))
            return record
        if State(status.state) in FINAL_STATES:
            latest: Record = store.get_pilots([record["id"]])[0]
            if State(latest["state"]) in FINAL_STATES:
                return latest
            reason = status.message or f"batch job {native_id} ended ({status.state})"
            return fail_pilot(session, store, latest, reason)
    return record


def fail_pilot(session: Any, store: Any, record: Record, reason: str,
               final: State = State.Failed) -> Record:
    """End a pilot (Failed, or Canceled/Done) and account for every unit bound to it: started
    units end in ``final``-dependent states, restartable ones and queued service units go back
    to the service, queued direct units end too. Returns the pilot's record."""
    now = time.time()
    pilot_id = record["id"]
    if store.update_pilot(pilot_id, {"state": final, "reason": reason if final is not State.Canceled else None,
                                     "finished": now}, expect=LIVE_PILOT_STATES):
        notify(session, Kind.pilot, pilot_id, record["state"], final)
        log = get_logger(pilot=pilot_id)
        (log.info if final is State.Canceled else log.warning)("pilot ended", state=str(final), reason=reason)
    settle_units(store, pilot_id, reason, State.Canceled if final is State.Canceled else State.Failed)
    native_id = record.get("native_id")
    if native_id:
        try:
            session.adaptor(record["description"]["service_url"]).cancel(native_id)
        except Exception as exc:
            get_logger().debug("pilot cleanup failed", pilot=pilot_id, error=str(exc))
    return store.get_pilots([pilot_id])[0]  # type: ignore[no-any-return]


def settle_units(store: Any, pilot_id: str, reason: str, started_end: State) -> None:
    """After a pilot ended: its started units end in ``started_end`` (restartable ones are queued
    again), its queued service units go back to the service, its queued direct units end."""
    now = time.time()
    updates = []
    for unit in store.find_units(pilot_id=pilot_id, states=STARTED_UNIT_STATES):
        if started_end is State.Failed and (unit.get("description") or {}).get("restartable"):
            changes: dict[str, Any] = {"state": State.Pending, "pilot_id": None, "claimed": False,
                                       "attempts": int(unit.get("attempts") or 0) + 1, "started": None}
            if unit.get("cds_id") is None:
                changes = {"state": started_end, "reason": reason, "finished": now}
        else:
            changes = {"state": started_end, "reason": reason if started_end is State.Failed else None,
                       "finished": now}
        updates.append(UnitUpdate(unit["id"], changes, expect=STARTED_UNIT_STATES))
    store.update_units(updates)
    store.unbind_units(pilot_id)
    direct = store.find_units(pilot_id=pilot_id, states=QUEUED_UNIT_STATES)
    queued_end = State.Canceled if started_end is State.Canceled else State.Failed
    store.update_units([UnitUpdate(u["id"], {"state": queued_end, "reason": reason if queued_end is State.Failed
                                             else None, "finished": now}, expect=QUEUED_UNIT_STATES)
                        for u in direct])


def cancel_pilot(session: Any, store: Any, record: Record) -> Record:
    """Cancel a pilot for real: flag it, mark it Canceled, end its batch job, settle its units."""
    if State(record["state"]) in FINAL_STATES:
        return record
    store.update_pilot(record["id"], {"cancel_requested": True})
    return fail_pilot(session, store, record, "pilot canceled", final=State.Canceled)


def cancel_units(store: Any, unit_ids: Sequence[str]) -> None:
    """Cancel units: queued ones end at once, started ones are flagged for their agent to kill."""
    now = time.time()
    store.update_units([UnitUpdate(u, {"state": State.Canceled, "finished": now}, expect=QUEUED_UNIT_STATES)
                        for u in unit_ids])
    store.update_units([UnitUpdate(u, {"cancel_requested": True}, expect=STARTED_UNIT_STATES)
                        for u in unit_ids])
