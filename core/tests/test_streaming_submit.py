"""``submit_compute_units`` takes any iterable and writes it in bounded batches: a generator is
consumed as it is written (never held whole), a batch is all or nothing, an invalid description
in a later batch stops the submission and cancels what this call queued, and the handles are
light."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from pilot import ComputeDataService, PilotComputeService, PilotError, State
from pilot.compute import ComputeUnit
from pilot.service import SUBMIT_BATCH
from pilot.testing.fixtures import PilotEnv


def _idle_service() -> ComputeDataService:
    """A service with a pilot service but no pilot: nothing it queues runs."""
    cds = ComputeDataService()
    cds.add_pilot_compute_service(PilotComputeService())
    return cds


def test_a_generator_is_written_batch_by_batch(pilot_env: PilotEnv) -> None:
    cds = _idle_service()
    seen_queued: list[int] = []

    def descriptions() -> Iterator[dict[str, object]]:
        for n in range(2 * SUBMIT_BATCH + 5):
            if n in (SUBMIT_BATCH + 1, 2 * SUBMIT_BATCH + 1):  # a batch was written before this one is read
                seen_queued.append(cds._store.count_units(cds_id=cds.id).get("Pending", 0))
            yield {"executable": "/bin/true", "arguments": [str(n)]}

    units = cds.submit_compute_units(descriptions())
    assert len(units) == 2 * SUBMIT_BATCH + 5
    assert seen_queued == [SUBMIT_BATCH, 2 * SUBMIT_BATCH]
    assert cds._store.count_units(cds_id=cds.id) == {"Pending": 2 * SUBMIT_BATCH + 5}
    assert units[-1].get_details()["arguments"] == [str(2 * SUBMIT_BATCH + 4)]
    cds.cancel()


def test_an_invalid_description_in_the_first_batch_queues_nothing(pilot_env: PilotEnv) -> None:
    cds = _idle_service()
    bad = [{"executable": "/bin/true"}] * 5 + [{"executable": ""}]
    with pytest.raises(PilotError, match="compute unit description #5"):
        cds.submit_compute_units(iter(bad))
    assert cds.list_compute_units() == []


def test_an_invalid_description_later_stops_and_cancels_what_was_queued(pilot_env: PilotEnv) -> None:
    cds = _idle_service()
    descriptions = ({"executable": "/bin/true"} if n != SUBMIT_BATCH + 3 else {"executable": "/bin/true",
                                                                              "number_of_processes": -1}
                    for n in range(SUBMIT_BATCH + 10))
    with pytest.raises(PilotError, match=rf"description #{SUBMIT_BATCH + 3}.*the {SUBMIT_BATCH} units queued "
                                         "before it by this call were canceled"):
        cds.submit_compute_units(descriptions)
    assert cds._store.count_units(cds_id=cds.id) == {"Canceled": SUBMIT_BATCH}
    reason = cds.list_compute_units()[0].get_details()["reason"]
    assert reason.startswith("submission stopped: compute unit description #")


def test_handles_are_light_and_read_state_on_demand(pilot_env: PilotEnv) -> None:
    cds = _idle_service()
    (unit,) = cds.submit_compute_units([{"executable": "/bin/true"}])
    assert isinstance(unit, ComputeUnit) and not hasattr(unit, "__dict__")
    assert sys.getsizeof(unit) < 100
    assert unit.get_state() == State.Pending
    cds.cancel()
    assert unit.get_state() == State.Canceled
