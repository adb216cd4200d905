"""Client- and agent-side lifecycle rules shared by every handle: pilot liveness, pilot failure
and cancel, giving back the units of a pilot that can no longer run them, unit cancel. Every
state change goes through ``pilot.transitions``.

Who may hand back a pilot's claimed units: its own agent (at drain, or units held too long), or
anyone once the agent is surely gone: its batch job is final, or its lease has run out (no
heartbeat for ``lease_seconds``; an agent starts nothing once its own lease has run out, see
``pilot.agent.runner``). So a unit is never started by two agents."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pilot.log import get_logger
from pilot.states import (
    FINAL_STATES,
    LIVE_PILOT_STATES,
    QUEUED_UNIT_STATES,
    STARTED_UNIT_STATES,
    Kind,
    State,
)
from pilot.store import CoordinationStore, Record, UnitUpdate
from pilot.transitions import UnitChange, change_units, transition

if TYPE_CHECKING:
    from pilot.session import Session

__all__ = ["LIVE_PILOT_STATES", "QUEUED_UNIT_STATES", "STARTED_UNIT_STATES", "cancel_pilot", "cancel_units",
           "fail_pilot", "lease_seconds", "refresh_pilot", "release_orphans", "settle_units"]

_STATUS_EVERY = 1.0  # seconds between two batch-system status queries for one pilot
#: How long after a pilot ended others still look for units its agent left claimed.
ORPHAN_WINDOW = 3600.0


def lease_seconds(pilot: Record) -> float:
    """How long an agent's claim on its units lasts after its last heartbeat."""
    return float(pilot.get("heartbeat_timeout") or 60.0) / 2


def agent_gone(pilot: Record, now: float | None = None) -> bool:
    """Whether the pilot's agent can no longer start units: it never marked the pilot Running
    (no heartbeat), or its lease ran out."""
    heartbeat = pilot.get("heartbeat")
    return not heartbeat or (now or time.time()) - float(heartbeat) > lease_seconds(pilot)


def refresh_pilot(session: Session, store: CoordinationStore, record: Record, *, ask_batch: bool = True) -> Record:
    """Check a live pilot against its heartbeat and (with ``ask_batch``) its batch job; fail it
    when it is dead. Returns the pilot's current record."""
    if State(record["state"]) in FINAL_STATES:
        return record
    now = time.time()
    timeout = float(record.get("heartbeat_timeout") or 60.0)
    heartbeat = record.get("heartbeat")
    if record["state"] == State.Running and heartbeat and now - heartbeat > timeout:
        return fail_pilot(session, store, record,
                          f"agent silent for {now - heartbeat:.0f} s (heartbeat timeout {timeout:g} s)",
                          gone=True, cleanup=ask_batch)
    native_id = record.get("native_id")
    asked = session.status_asked  # pilot id -> when this session last asked its batch system
    if ask_batch and native_id and now - asked.get(record["id"], 0.0) >= _STATUS_EVERY:
        asked[record["id"]] = now
        try:
            status = session.adaptor(record["description"]["service_url"]).status(native_id)
        except Exception as exc:  # an adaptor that cannot answer here leaves the heartbeat to decide
            get_logger().debug("pilot status unavailable", pilot=record["id"], error=str(exc))
            return record
        if State(status.state) in FINAL_STATES:
            latest: Record = store.get_pilots([record["id"]])[0]
            if State(latest["state"]) in FINAL_STATES:
                release_orphans(session, store, [latest], batch_final=True)
                return latest
            reason = status.message or f"batch job {native_id} ended ({status.state})"
            return fail_pilot(session, store, latest, reason, gone=True)
    return record


def fail_pilot(session: Session, store: CoordinationStore, record: Record, reason: str, final: State = State.Failed, *,
               gone: bool = True, cleanup: bool = True) -> Record:
    """End a pilot (Failed, or Canceled/Done) and account for its units: started units end
    (restartable ones are queued again), queued direct units end, and queued service units go
    back to their service when the agent is ``gone`` (else the agent hands them back as it
    drains). With ``cleanup`` the batch job is canceled too. Returns the pilot's record."""
    pilot_id = record["id"]
    ended = transition(store, Kind.pilot, [pilot_id], final,
                       {"reason": reason if final is not State.Canceled else None, "finished": time.time()},
                       session=session)
    if ended:
        log = get_logger(pilot=pilot_id)
        (log.info if final is State.Canceled else log.warning)("pilot ended", state=str(final), reason=reason)
    settle_units(store, pilot_id, reason, State.Canceled if final is State.Canceled else State.Failed,
                 session=session, release=gone)
    native_id = record.get("native_id")
    if native_id and cleanup:
        try:
            session.adaptor(record["description"]["service_url"]).cancel(native_id)
        except Exception as exc:
            get_logger().debug("pilot cleanup failed", pilot=pilot_id, error=str(exc))
    return store.get_pilots([pilot_id])[0]


def settle_units(store: CoordinationStore, pilot_id: str, reason: str, started_end: State, *,
                 session: Session | None = None, release: bool = True) -> None:
    """After a pilot ended: its started units end in ``started_end`` (restartable service units
    are queued again), its queued direct units end, and (with ``release``) its queued service
    units go back to their service, unbound and unclaimed."""
    now = time.time()
    changes = []
    for unit in store.find_units(pilot_id=pilot_id, states=STARTED_UNIT_STATES,
                                 fields=("id", "cds_id", "attempts", "description")):
        if started_end is State.Failed and unit.get("cds_id") and (unit.get("description") or {}).get("restartable"):
            changes.append(UnitChange(unit["id"], State.Pending, {
                "pilot_id": None, "claimed": False, "attempts": int(unit.get("attempts") or 0) + 1, "started": None},
                only_from=STARTED_UNIT_STATES))
        else:
            changes.append(UnitChange(unit["id"], started_end, {
                "reason": reason if started_end is State.Failed else None, "finished": now},
                only_from=STARTED_UNIT_STATES))
    change_units(store, changes, session)
    if release:
        store.unbind_units(pilot_id)
    direct = [u["id"] for u in store.find_units(pilot_id=pilot_id, states=QUEUED_UNIT_STATES, fields=("id", "cds_id"))
              if u.get("cds_id") is None]
    transition(store, Kind.unit, direct, started_end, {
        "reason": reason if started_end is State.Failed else None, "finished": now},
        session=session, only_from=QUEUED_UNIT_STATES)


def release_orphans(session: Session, store: CoordinationStore, pilots: Sequence[Record], *,
                    batch_final: bool = False) -> list[str]:
    """Give back the queued units that ended pilots' agents left claimed, once those agents are
    surely gone (their batch job is final, or their lease ran out). Returns the ids given back."""
    now = time.time()
    out: list[str] = []
    for pilot in pilots:
        if State(pilot["state"]) not in FINAL_STATES or now - float(pilot.get("finished") or now) > ORPHAN_WINDOW:
            continue
        if not (batch_final or agent_gone(pilot, now)):
            continue
        if store.find_units(pilot_id=pilot["id"], states=QUEUED_UNIT_STATES, limit=1, fields=("id",)):
            out += store.unbind_units(pilot["id"])
    return out


def cancel_pilot(session: Session, store: CoordinationStore, record: Record) -> Record:
    """Cancel a pilot for real: flag it, mark it Canceled, end its batch job, settle its units
    (a running agent hands its queued units back as it drains)."""
    if State(record["state"]) in FINAL_STATES:
        return record
    store.update_pilot(record["id"], {"cancel_requested": True})
    latest = store.get_pilots([record["id"]])[0]
    return fail_pilot(session, store, latest, "pilot canceled", final=State.Canceled, gone=agent_gone(latest))


def cancel_units(store: CoordinationStore, unit_ids: Sequence[str], session: Session | None = None) -> None:
    """Cancel units: queued ones end at once, started ones are flagged for their agent to kill."""
    transition(store, Kind.unit, unit_ids, State.Canceled, {"finished": time.time()}, session=session,
               only_from=QUEUED_UNIT_STATES)
    store.update_units([UnitUpdate(u, {"cancel_requested": True}, expect=STARTED_UNIT_STATES) for u in unit_ids])
