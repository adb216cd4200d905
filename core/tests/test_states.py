"""The one transition table: every (old, new) pair of every kind is legal or raises."""

from __future__ import annotations

import itertools
import json

import pytest

from pilot import PilotError, State
from pilot.errors import IllegalTransition
from pilot.states import FINAL_STATES, TRANSITIONS, Kind, advance, is_legal

S = State
# The lifecycles of pilot-api.md, written out independently of pilot.states.
EXPECTED: dict[Kind, set[tuple[State, State]]] = {
    Kind.pilot: {
        (S.New, S.Pending), (S.New, S.Failed), (S.New, S.Canceled),
        (S.New, S.Running),  # the agent started before its client recorded the submission
        (S.Pending, S.Running), (S.Pending, S.Done), (S.Pending, S.Failed), (S.Pending, S.Canceled),
        (S.Running, S.Done), (S.Running, S.Failed), (S.Running, S.Canceled),
    },
    Kind.unit: {
        (S.New, S.Pending), (S.New, S.Failed), (S.New, S.Canceled),
        (S.Pending, S.Staging), (S.Pending, S.Running), (S.Pending, S.Failed), (S.Pending, S.Canceled),
        (S.Pending, S.Done),  # the agent's merged write of a unit that started and ended in one flush
        (S.Staging, S.Running), (S.Staging, S.Done), (S.Staging, S.Failed), (S.Staging, S.Canceled),
        (S.Staging, S.Staging),  # input staging, then the start and the output staging in one merged write
        (S.Running, S.Staging), (S.Running, S.Done), (S.Running, S.Failed), (S.Running, S.Canceled),
        (S.Running, S.Pending),  # a restartable unit whose pilot died is queued again
    },
    Kind.data_unit: {
        (S.New, S.Pending), (S.New, S.Failed), (S.New, S.Canceled),
        (S.Pending, S.Running), (S.Pending, S.Failed), (S.Pending, S.Canceled),
        (S.Running, S.Pending),  # files are being added to a stored DU
        (S.Running, S.Done), (S.Running, S.Failed), (S.Running, S.Canceled),
    },
    Kind.pilot_data: {(S.Running, S.Canceled)},
}
ALL_PAIRS = [(kind, old, new) for kind in Kind for old, new in itertools.product(State, State)]
LEGAL = [p for p in ALL_PAIRS if (p[1], p[2]) in EXPECTED[p[0]]]
ILLEGAL = [p for p in ALL_PAIRS if (p[1], p[2]) not in EXPECTED[p[0]]]


def _id(pair: tuple[Kind, State, State]) -> str:
    return f"{pair[0]}:{pair[1]}->{pair[2]}"


@pytest.mark.parametrize(("kind", "old", "new"), LEGAL, ids=[_id(p) for p in LEGAL])
def test_legal_transition(kind: Kind, old: State, new: State) -> None:
    assert is_legal(kind, old, new)
    assert advance(kind, old, new) is new
    assert advance(kind, str(old), str(new)) is new


@pytest.mark.parametrize(("kind", "old", "new"), ILLEGAL, ids=[_id(p) for p in ILLEGAL])
def test_illegal_transition_raises(kind: Kind, old: State, new: State) -> None:
    assert not is_legal(kind, old, new)
    with pytest.raises(IllegalTransition) as info:
        advance(kind, old, new)
    assert isinstance(info.value, PilotError)
    message = str(info.value)
    assert f"{old} -> {new}" in message
    assert kind.value in message


def test_every_pair_is_classified() -> None:
    """The two parametrized lists cover every kind and every pair exactly once."""
    assert len(LEGAL) + len(ILLEGAL) == len(Kind) * len(State) ** 2
    assert set(TRANSITIONS) == set(Kind)


@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("final", sorted(FINAL_STATES))
def test_final_states_never_change(kind: Kind, final: State) -> None:
    assert final.is_final
    for new in State:
        with pytest.raises(IllegalTransition, match="final states never change"):
            advance(kind, final, new)


def test_finality() -> None:
    assert {s for s in State if s.is_final} == {State.Done, State.Canceled, State.Failed}


def test_advance_rejects_unknown_names() -> None:
    with pytest.raises(ValueError):
        advance(Kind.unit, "Pending", "Finished")


@pytest.mark.parametrize("state", list(State))
def test_states_compare_equal_to_their_names(state: State) -> None:
    name = state.name
    assert state == name
    assert name == state
    assert str(state) == name
    assert f"{state}" == name
    assert State(name) is state
    assert hash(state) == hash(name)
    assert {name: 1}[state] == 1
    assert json.dumps(state) == json.dumps(name)
    assert state != name.lower()


def test_public_state_names() -> None:
    assert [s.name for s in State] == ["Unknown", "New", "Pending", "Staging", "Running", "Done", "Canceled",
                                       "Failed"]
