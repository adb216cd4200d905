"""What the conformance suite cannot see of the Redis store's queues: retries answered from
their idempotency token, the index of constrained queued units (``cc:<cds>``), and the bound on
a claim's walk of a service's queue."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pilot.session import Session
from pilot.states import State
from pilot.store import UnitUpdate
from pilot.testing.records import unit_record
from pilot_redis.scripts import CLAIM_SCAN
from pilot_redis.store import RedisStore


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    opened = Session().store(redis_url)
    assert isinstance(opened, RedisStore)
    yield opened
    opened.close()


def _ids(records: Any) -> list[str]:
    return [r["id"] for r in records]


def _index(store: RedisStore, name: str) -> list[str]:
    return [i.decode() for i in store._client.zrange(f"{store._p}{name}", 0, -1)]


def test_update_retried_with_its_token_gets_the_first_answer(store: RedisStore) -> None:
    """A retried update (same token) answers the states before the first try and applies nothing."""
    store.insert_units([unit_record("cu-1")])
    args = (1, "cu-1", "", 1, "Pending", 1, "state", "Running", 0)
    first = store._script("UPDATE_UNITS", *args, token="tok-update")
    store.update_units([UnitUpdate("cu-1", {"state": State.Done})])
    assert store._script("UPDATE_UNITS", *args, token="tok-update") == first == [b"cu-1", b"Pending"]
    assert store.get_units(["cu-1"])[0]["state"] == "Done"


def test_claim_retried_with_its_token_gets_the_same_units(store: RedisStore) -> None:
    """A retried claim returns the units the first try claimed, and claims no more."""
    store.insert_units([unit_record(f"cu-{n}") for n in range(3)] + [unit_record("cu-mine", pilot_id="pilot-1")])
    args = ("pilot-1", 2, -1, CLAIM_SCAN, "cds-1")
    first = store._claimed(store._script("CLAIM_UNITS", *args, token="tok-claim"))
    again = store._claimed(store._script("CLAIM_UNITS", *args, token="tok-claim"))
    assert _ids(first) == _ids(again) == ["cu-0", "cu-mine"]
    assert again == store.get_units(["cu-0", "cu-mine"])
    assert _ids(store.claim_units("pilot-2", 10, services=["cds-1"])) == ["cu-1", "cu-2"]


def test_an_update_named_in_two_chunks_keeps_the_state_before_the_first(store: RedisStore) -> None:
    """Calls of more than 1,000 updates go in chunks; a unit in two of them reports its state
    before the call."""
    store.insert_units([unit_record(f"cu-{n:04d}") for n in range(1000)])
    updates = [UnitUpdate(f"cu-{n:04d}", {"state": State.Running}, expect=[State.Pending]) for n in range(1000)]
    applied = store.update_units([*updates, UnitUpdate("cu-0000", {"state": State.Done}, expect=[State.Running])])
    assert len(applied) == 1000 and set(applied.values()) == {"Pending"}
    assert store.get_units(["cu-0000"])[0]["state"] == "Done"


def test_constrained_queued_units_have_an_index_of_their_own(store: RedisStore) -> None:
    """``cc:<cds>`` holds exactly the unbound queued units with a label or input data: binding,
    starting and handing back move them out and in; plain units never enter it."""
    store.insert_units([unit_record("cu-plain"), unit_record("cu-dc", datacenter="eu"),
                        unit_record("cu-data", input_data=["x"]), unit_record("cu-empty", input_data=[]),
                        unit_record("cu-bound", machine="m1", pilot_id="pilot-1")])
    assert _index(store, "cc:cds-1") == ["cu-dc", "cu-data"]
    assert _index(store, "cf:cds-1") == ["cu-plain", "cu-dc", "cu-data", "cu-empty"]
    assert store.bind_units([("cu-dc", "pilot-1")]) == ["cu-dc"]
    store.update_units([UnitUpdate("cu-data", {"state": State.Canceled})])
    assert _index(store, "cc:cds-1") == []
    assert _ids(store.claim_units("pilot-1", 10)) == ["cu-dc", "cu-bound"]
    assert sorted(store.unbind_units("pilot-1")) == ["cu-bound", "cu-dc"]
    assert _index(store, "cc:cds-1") == ["cu-dc", "cu-bound"]
    assert _ids(store.find_units(cds_id="cds-1", states=[State.Pending], unbound=True, constrained=True)) == \
        ["cu-dc", "cu-bound"]
    assert _ids(store.find_units(constrained=True, states=[State.Canceled])) == ["cu-data"]
    assert _ids(store.claim_units("pilot-2", 10, services=["cds-1"])) == ["cu-plain", "cu-empty"]


def test_claim_walks_past_constrained_and_oversized_units(store: RedisStore) -> None:
    """Thousands of constrained units ahead of the plain ones do not hide them from a claim."""
    store.insert_units([unit_record(f"cu-c{n:04d}", datacenter="eu") for n in range(3000)]
                       + [unit_record(f"cu-big{n}", slots=8) for n in range(50)]
                       + [unit_record(f"cu-{n}") for n in range(3)])
    assert _ids(store.claim_units("pilot-1", 2, services=["cds-1"], max_slots=4)) == ["cu-0", "cu-1"]
    assert _ids(store.claim_units("pilot-1", 5, services=["cds-1"], max_slots=4)) == ["cu-2"]


def test_claim_looks_at_no_more_than_claim_scan_queue_entries(store: RedisStore) -> None:
    """The walk of a queue is bounded: a unit behind ``CLAIM_SCAN`` unclaimable ones (here
    units still New) waits until those move."""
    store.insert_units([unit_record(f"cu-new{n:05d}", state=State.New) for n in range(CLAIM_SCAN)]
                       + [unit_record("cu-late")])
    assert store.claim_units("pilot-1", 5, services=["cds-1"]) == []
    store.update_units([UnitUpdate("cu-new00000", {"state": State.Canceled})])
    assert _ids(store.claim_units("pilot-1", 5, services=["cds-1"])) == ["cu-late"]


def test_a_constrained_unit_missing_from_its_index_is_still_not_claimed_as_plain(store: RedisStore) -> None:
    """A store written before ``cc:`` existed keeps constrained units out of plain claims; the
    claim that walks past one puts it in the index, where the placement policy finds it."""
    store.insert_units([unit_record("cu-dc", datacenter="eu"), unit_record("cu-plain")])
    store._client.delete(f"{store._p}cc:cds-1")
    assert _ids(store.claim_units("pilot-1", 5, services=["cds-1"])) == ["cu-plain"]
    assert _ids(store.find_units(cds_id="cds-1", states=[State.Pending], unbound=True, constrained=True)) == ["cu-dc"]
