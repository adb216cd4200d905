"""States of pilots, compute units and data units, and the one table of legal transitions.

::

    Pilot:   New -> Pending -> Running -> Done | Canceled | Failed
    Unit:    New -> Pending -> Staging -> Running -> Staging -> Done | Failed | Canceled
    Data:    New -> Pending -> Running -> Done | Failed

Final states never change. ``advance()`` is the only place that decides legality.
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


FINAL_STATES = frozenset({State.Done, State.Canceled, State.Failed})

_S = State
TRANSITIONS: Mapping[Kind, Mapping[State, frozenset[State]]] = {
    Kind.pilot: {
        _S.New: frozenset({_S.Pending, _S.Failed, _S.Canceled}),
        _S.Pending: frozenset({_S.Running, _S.Done, _S.Failed, _S.Canceled}),
        _S.Running: frozenset({_S.Done, _S.Failed, _S.Canceled}),
    },
    Kind.unit: {
        _S.New: frozenset({_S.Pending, _S.Failed, _S.Canceled}),
        # Pending -> Running: a unit with nothing to stage skips Staging.
        _S.Pending: frozenset({_S.Staging, _S.Running, _S.Failed, _S.Canceled}),
        _S.Staging: frozenset({_S.Running, _S.Done, _S.Failed, _S.Canceled}),
        # Running -> Pending: a restartable unit whose pilot died is queued again.
        _S.Running: frozenset({_S.Staging, _S.Done, _S.Failed, _S.Canceled, _S.Pending}),
    },
    Kind.data_unit: {
        _S.New: frozenset({_S.Pending, _S.Failed, _S.Canceled}),
        _S.Pending: frozenset({_S.Running, _S.Failed, _S.Canceled}),
        # Running -> Pending: files are being added to a stored DU.
        _S.Running: frozenset({_S.Pending, _S.Done, _S.Failed, _S.Canceled}),
    },
}


def is_legal(kind: Kind, old: State, new: State) -> bool:
    """Whether ``old -> new`` is a legal transition for ``kind``."""
    return new in TRANSITIONS[kind].get(old, frozenset())


def advance(kind: Kind, old: State | str, new: State | str) -> State:
    """Return ``new`` as a State if ``old -> new`` is legal for ``kind``; raise otherwise."""
    old_state, new_state = State(old), State(new)
    if not is_legal(kind, old_state, new_state):
        why = "final states never change" if old_state.is_final else "not in the transition table"
        raise IllegalTransition(f"illegal {kind.value} transition {old_state} -> {new_state}: {why}")
    return new_state
