"""The one way any state changes: ``transition()`` (and ``change_units()`` for an agent's batch of
different changes). The allowed previous states come from ``pilot.states.TRANSITIONS``; every
write is conditional on them; the store answers with the state each object really left; only
then are ``pilot_state_changed`` observers told, once per change that was written."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pilot.log import get_logger
from pilot.states import Kind, State, allowed_from
from pilot.store import CoordinationStore, UnitUpdate

if TYPE_CHECKING:
    from pilot.session import Session

_CAS_TRIES = 8  # read-then-conditional-write rounds for one pilot or data unit under contention


@dataclasses.dataclass(frozen=True)
class UnitChange:
    """Move unit ``id`` to ``new`` with ``changes``, from any state the table allows (narrowed
    to ``only_from`` when given), and only while it is bound to ``pilot_id`` when given."""

    id: str
    new: State
    changes: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    only_from: tuple[State, ...] | None = None
    pilot_id: str | None = None


def expected(kind: Kind, new: State | str, only_from: Iterable[State] | None = None) -> tuple[State, ...]:
    """The states a write to ``new`` may leave: those of the table, narrowed to ``only_from``."""
    allowed = allowed_from(kind, new)
    if only_from is None:
        return allowed
    narrow = {State(s) for s in only_from}
    return tuple(s for s in allowed if s in narrow)


def observed(session: Session | None) -> bool:
    """Whether any ``pilot_state_changed`` observer is registered in ``session``."""
    return session is not None and bool(session.plugins.implementers("pilot_state_changed"))


def notify(session: Session | None, kind: Kind, entity_id: str, old: State | str, new: State | str) -> None:
    """Tell ``pilot_state_changed`` observers about a change this process has written."""
    if session is None:
        return
    try:
        session.plugins.state_changed(kind, entity_id, State(old), State(new))
    except Exception:  # observers must not break the caller
        get_logger().exception("pilot_state_changed observer failed", entity=entity_id)


def change_units(store: CoordinationStore, changes: Sequence[UnitChange],
                 session: Session | None = None) -> dict[str, State]:
    """Write many unit transitions in one store call; return ``{id: state left}`` for those
    written, after telling observers."""
    if not changes:
        return {}
    updates = [UnitUpdate(c.id, {**c.changes, "state": c.new}, expected(Kind.unit, c.new, c.only_from), c.pilot_id)
               for c in changes]
    before = store.update_units(updates)
    left = {unit_id: State(old) for unit_id, old in before.items()}
    if left and observed(session):
        new_of = {c.id: c.new for c in changes}  # the last change of a unit named twice wins
        for unit_id, old in left.items():
            notify(session, Kind.unit, unit_id, old, new_of[unit_id])
    return left


def transition(store: CoordinationStore, kind: Kind, ids: Sequence[str], new: State,
               changes: Mapping[str, Any] | None = None, *, session: Session | None = None,
               only_from: Iterable[State] | None = None, pilot_id: str | None = None) -> dict[str, State]:
    """Move every object in ``ids`` of ``kind`` to ``new`` (with ``changes``) where the table
    allows it from its current state (narrowed to ``only_from``). Returns ``{id: state left}``
    for those changed; observers in ``session`` hear each of them after the write."""
    extra = dict(changes or {})
    narrow = None if only_from is None else tuple(State(s) for s in only_from)
    if kind is Kind.unit:
        return change_units(store, [UnitChange(i, new, extra, narrow, pilot_id) for i in ids], session)
    allowed = set(expected(kind, new, narrow))
    left: dict[str, State] = {}
    for entity_id in ids:
        old = _compare_and_set(store, kind, entity_id, new, extra, allowed=allowed)
        if old is not None:
            left[entity_id] = old
            if observed(session):
                notify(session, kind, entity_id, old, new)
    return left


def _compare_and_set(store: CoordinationStore, kind: Kind, entity_id: str, new: State, changes: Mapping[str, Any], *,
                     allowed: set[State]) -> State | None:
    """Read the state, write conditionally on exactly it; again if it changed meanwhile."""
    for _ in range(_CAS_TRIES):
        if kind is Kind.pilot:
            found = store.get_pilots([entity_id])
            current = found[0]["state"] if found else None
        else:
            record = store.get_service(entity_id)
            current = record["data"].get("state") if record else None  # data units, pilot data
        if current is None or State(current) not in allowed:
            return None
        old = State(current)
        if kind is Kind.pilot:
            written = store.update_pilot(entity_id, {**changes, "state": new}, expect=[old])
        else:
            written = store.update_service(entity_id, {**changes, "state": new}, expect=[old])
        if written:
            return old
    return None
