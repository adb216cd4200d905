"""States of pilots, compute units and data units, the one table of legal transitions, and every
set of states the rest of the code (stores included) uses, derived here.

::

    Pilot:   New -> Pending -> Running -> Done | Canceled | Failed
    Unit:    New -> Pending -> Staging -> Running -> Staging -> Done | Failed | Canceled
    Data:    New -> Pending -> Running -> Done | Failed

Final states never change. ``advance()`` decides legality; ``allowed_from()`` gives the states a
conditional write may leave for a new state (``pilot.transitions`` is the only code that changes
a state, and only along these edges).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from pilot.errors import IllegalTransition


class State(enum.StrEnum):
    """A state; members compare equal to their names (``State.Done == "Done"``)."""

    Unknown = "Unknown"
    New = "New"
    Pending = "Pending"
    Staging = "Staging"
    Running = "Running"
    Done = "Done"
    Canceled = "Canceled"
    Failed = "Failed"

    @property
    def is_final(self) -> bool:
        """True for Done, Canceled and Failed."""
        return self in FINAL_STATES


class Kind(enum.StrEnum):
    """The kinds of entity that have states."""

    pilot = "pilot"
    unit = "unit"
    data_unit = "data_unit"
    pilot_data = "pilot_data"


FINAL_STATES = frozenset({State.Done, State.Canceled, State.Failed})

_S = State
TRANSITIONS: Mapping[Kind, Mapping[State, frozenset[State]]] = {
    Kind.pilot: {
        # New -> Running: an agent may start before its client has recorded the submission.
        _S.New: frozenset({_S.Pending, _S.Running, _S.Failed, _S.Canceled}),
        _S.Pending: frozenset({_S.Running, _S.Done, _S.Failed, _S.Canceled}),
        _S.Running: frozenset({_S.Done, _S.Failed, _S.Canceled}),
    },
    Kind.unit: {
        _S.New: frozenset({_S.Pending, _S.Failed, _S.Canceled}),
        # Pending -> Running: a unit with nothing to stage skips Staging. Pending -> Done: the
        # agent merges the changes of one flush, so a short unit may be written only at its end.
        _S.Pending: frozenset({_S.Staging, _S.Running, _S.Done, _S.Failed, _S.Canceled}),
        # Staging -> Staging: input staging written, then the start and the output staging merged
        # into one write (Running collapsed, as in Pending -> Done).
        _S.Staging: frozenset({_S.Staging, _S.Running, _S.Done, _S.Failed, _S.Canceled}),
        # Running -> Pending: a restartable unit whose pilot died is queued again.
        _S.Running: frozenset({_S.Staging, _S.Done, _S.Failed, _S.Canceled, _S.Pending}),
    },
    Kind.data_unit: {
        _S.New: frozenset({_S.Pending, _S.Failed, _S.Canceled}),
        _S.Pending: frozenset({_S.Running, _S.Failed, _S.Canceled}),
        # Running -> Pending: files are being added to a stored DU.
        _S.Running: frozenset({_S.Pending, _S.Done, _S.Failed, _S.Canceled}),
    },
    # a PilotData is stored Running; released, it takes no more data
    Kind.pilot_data: {
        _S.Running: frozenset({_S.Canceled}),
    },
}

#: Pilots that can still run units (their agent may be queued, starting or running).
LIVE_PILOT_STATES: tuple[State, ...] = tuple(TRANSITIONS[Kind.pilot])
#: Units that are not final.
ACTIVE_UNIT_STATES: tuple[State, ...] = tuple(TRANSITIONS[Kind.unit])
#: Units that hold slots on their pilot's agent (staging or running).
STARTED_UNIT_STATES: tuple[State, ...] = (_S.Staging, _S.Running)
#: Units waiting for a slot: not final and not started.
QUEUED_UNIT_STATES: tuple[State, ...] = tuple(s for s in ACTIVE_UNIT_STATES if s not in STARTED_UNIT_STATES)
#: The one queued state an agent claims units in (units are stored already Pending).
CLAIMABLE_STATE = _S.Pending


def is_legal(kind: Kind, old: State, new: State) -> bool:
    """Whether ``old -> new`` is a legal transition for ``kind``."""
    return new in TRANSITIONS[kind].get(old, frozenset())


def allowed_from(kind: Kind, new: State | str) -> tuple[State, ...]:
    """Every state of ``kind`` that may change to ``new``, in table order."""
    target = State(new)
    return tuple(old for old, targets in TRANSITIONS[kind].items() if target in targets)


def advance(kind: Kind, old: State | str, new: State | str) -> State:
    """Return ``new`` as a State if ``old -> new`` is legal for ``kind``; raise otherwise."""
    old_state, new_state = State(old), State(new)
    if not is_legal(kind, old_state, new_state):
        why = "final states never change" if old_state.is_final else "not in the transition table"
        raise IllegalTransition(f"illegal {kind.value} transition {old_state} -> {new_state}: {why}")
    return new_state


def lua_set(name: str, states: tuple[State, ...]) -> str:
    """A Lua table literal holding ``states`` (for stores whose atomic writes run as Lua)."""
    return f"local {name} = {{{', '.join(f'{s.value}=true' for s in states)}}}"
