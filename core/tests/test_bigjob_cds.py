"""The ComputeDataService as BigJob scripts use it (issue 10, points 4, 6 and 7): its state and
details, ``wait()`` covering its data units, and the store it takes from the first service
added when it was made without a URL."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pilot import ComputeDataService, PilotComputeService, PilotDataService, PilotError, State
from pilot.data import records
from pilot.lifecycle import LIVE_PILOT_STATES, cancel_pilot
from pilot.session import default_session, default_store_url

from helpers import fork_pilot


@pytest.fixture
def other_store(tmp_path: Path) -> Iterator[str]:
    """The URL of a second embedded store; pilots left alive there are canceled afterwards."""
    url = "sqlite://" + urllib.parse.quote(str(tmp_path / "other" / "store.sqlite"))
    yield url
    session = default_session()
    store = session.store(url)
    for pilot in store.find_pilots(LIVE_PILOT_STATES):
        cancel_pilot(session, store, pilot)


@pytest.fixture
def gated_transfers(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Data units stay Pending (their transfer waits) until the event is set."""
    gate = threading.Event()
    real = records.store_sources

    def gated(*args: Any, **kwargs: Any) -> Any:
        gate.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(records, "store_sources", gated)
    yield gate
    gate.set()  # never leave a transfer thread waiting


def _store_of(url: str) -> str:
    return url.partition("#")[0]


# --- state and details ---------------------------------------------------------------------
def test_state_follows_the_work_and_details_describe_the_service(tmp_path: Path) -> None:
    cds = ComputeDataService()
    assert cds.get_state() == State.New
    pcs = PilotComputeService()
    pilot = fork_pilot(pcs, slots=2)
    cds.add_pilot_compute_service(pcs)
    pds = PilotDataService()
    pd = pds.create_pilot({"service_url": str(tmp_path / "pd")})
    cds.add_pilot_data_service(pds)
    assert cds.get_state() == State.New  # services, no work yet
    unit = cds.submit_compute_unit({"executable": "/bin/sleep", "arguments": ["1"]})
    assert cds.get_state() == State.Running
    failing = cds.submit_compute_unit({"executable": "/bin/false"})
    du = cds.submit_data_unit({"file_urls": []})
    cds.wait(timeout=60)
    assert cds.get_state() == State.Done
    details = cds.get_details()
    assert details["id"] == cds.get_id() and details["url"] == cds.get_url()
    assert details["state"] == State.Done and details["placement"] == "agents"
    assert details["pilot_compute_services"] == [pcs.get_url()]
    assert details["pilot_data_services"] == [pds.get_url()]
    assert details["pilots"] == [pilot.get_url()] and details["pilot_data"] == [pd.get_url()]
    assert details["data_units"] == [du.get_url()]
    assert details["compute_units"] == {"Done": 1, "Failed": 1}
    assert unit.get_state() == State.Done and failing.get_state() == State.Failed

    cds.submit_compute_unit({"executable": "/bin/sleep", "arguments": ["5"]})
    assert cds.get_state() == State.Running  # open for more work: Running again
    cds.cancel()
    assert cds.get_state() == State.Canceled
    assert ComputeDataService(cds_url=cds.get_url()).get_state() == State.Canceled


# --- wait() covers data units ----------------------------------------------------------------
def test_wait_waits_for_data_units_as_well_as_compute_units(tmp_path: Path,
                                                            gated_transfers: threading.Event) -> None:
    pcs = PilotComputeService()
    fork_pilot(pcs)
    pds = PilotDataService()
    pds.create_pilot({"service_url": str(tmp_path / "pd")})
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    cds.add_pilot_data_service(pds)
    source = tmp_path / "in.txt"
    source.write_text("data")
    du = cds.submit_data_unit({"file_urls": [str(source)]})
    unit = cds.submit_compute_unit({"executable": "/bin/true"})
    assert unit.wait(timeout=30) == State.Done
    assert du.get_state() == State.Pending
    assert cds.get_state() == State.Running
    with pytest.raises(TimeoutError):
        cds.wait(timeout=0.5)
    assert du.get_state() == State.Pending  # a timeout cancels nothing
    threading.Timer(0.3, gated_transfers.set).start()
    cds.wait(timeout=30)
    assert du.get_state() == State.Running
    assert cds.get_state() == State.Done


def test_a_failed_data_unit_ends_the_wait(tmp_path: Path, gated_transfers: threading.Event) -> None:
    pds = PilotDataService()
    pds.create_pilot({"service_url": str(tmp_path / "pd")})
    cds = ComputeDataService()
    cds.add_pilot_data_service(pds)
    source = tmp_path / "gone.txt"
    source.write_text("soon removed")
    du = cds.submit_data_unit({"file_urls": [str(source)]})
    source.unlink()
    gated_transfers.set()
    cds.wait(timeout=30)
    assert du.get_state() == State.Failed


def test_wait_still_raises_for_units_that_can_never_run() -> None:
    cds = ComputeDataService()
    cds.add_pilot_compute_service(PilotComputeService())  # no pilot
    unit = cds.submit_compute_unit({"executable": "/bin/true"})
    with pytest.raises(PilotError, match=unit.id):
        cds.wait(timeout=30)


# --- the store of a ComputeDataService made without a URL ------------------------------------
def test_a_cds_without_url_takes_the_store_of_the_first_compute_service(other_store: str) -> None:
    pcs = PilotComputeService(other_store)
    fork_pilot(pcs)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    assert _store_of(cds.get_url()) == _store_of(pcs.get_url()) != default_store_url()
    unit = cds.submit_compute_unit({"executable": "/bin/true"})
    cds.wait(timeout=60)
    assert unit.get_state() == State.Done
    assert _store_of(unit.get_url()) == _store_of(pcs.get_url())
    with pytest.raises(PilotError, match="uses store") as info:
        cds.add_pilot_compute_service(PilotComputeService())  # the default store
    assert "first service added" in str(info.value)
    with pytest.raises(PilotError, match="uses store"):
        cds.add_pilot_data_service(PilotDataService())
    again = ComputeDataService(cds_url=cds.get_url())
    assert again.list_compute_units() == [unit] and again.list_pilot_compute_services() == [pcs]


def test_a_data_service_added_first_fixes_the_store_too(other_store: str, tmp_path: Path) -> None:
    pds = PilotDataService(other_store)
    pds.create_pilot({"service_url": str(tmp_path / "pd")})
    cds = ComputeDataService()
    assert cds.list_compute_units() == [] and cds.list_data_units() == [] and cds.get_state() == State.New
    cds.wait(timeout=1)  # reads fix no store
    cds.add_pilot_data_service(pds)
    du = cds.submit_data_unit({"file_urls": []})
    assert _store_of(du.get_url()) == _store_of(cds.get_url()) == _store_of(pds.get_url())
    cds.add_pilot_compute_service(PilotComputeService(other_store))
    with pytest.raises(PilotError, match="uses store"):
        cds.add_pilot_compute_service(PilotComputeService())


def test_a_cds_without_services_submits_to_the_default_store(other_store: str) -> None:
    cds = ComputeDataService()
    unit = cds.submit_compute_unit({"executable": "/bin/true"})
    assert _store_of(unit.get_url()) == _store_of(cds.get_url()) == default_store_url()
    with pytest.raises(PilotError, match="uses store"):
        cds.add_pilot_compute_service(PilotComputeService(other_store))
    pcs = PilotComputeService()
    fork_pilot(pcs)
    cds.add_pilot_compute_service(pcs)
    cds.wait(timeout=60)
    assert unit.get_state() == State.Done


def test_an_explicit_coordination_url_is_kept(other_store: str) -> None:
    cds = ComputeDataService(coordination_url=other_store)
    assert _store_of(cds.get_url()) == _store_of(PilotComputeService(other_store).get_url())
    with pytest.raises(PilotError, match="uses store"):
        cds.add_pilot_compute_service(PilotComputeService())
