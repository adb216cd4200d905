"""The compute side of the Pilot API on the fork adaptor and the embedded store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pilot import ComputeDataService, ComputeUnit, PilotComputeService, PilotError, State

from helpers import fork_pilot, wait_for

REPO = Path(__file__).resolve().parents[2]


def test_seed_example_runs_as_written(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(REPO / "docs" / "examples" / "seed.py")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "unit Done exit code 0" in result.stdout
    outputs = list((tmp_path / "work").glob("pilot-*/cu-*/stdout.txt"))
    assert len(outputs) == 1
    assert str(__import__("time").gmtime().tm_year) in outputs[0].read_text()


def test_late_binding_spreads_units_over_pilots_of_several_services() -> None:
    pcs_a, pcs_b = PilotComputeService(), PilotComputeService()
    pilot_a, pilot_b = fork_pilot(pcs_a), fork_pilot(pcs_b)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs_a)
    cds.add_pilot_compute_service(pcs_b)
    units = cds.submit_compute_units([{"executable": "/bin/sleep", "arguments": ["0.3"]}] * 6)
    cds.wait(timeout=60)
    assert [u.get_state() for u in units] == [State.Done] * 6
    used = {u.get_details()["pilot"] for u in units}
    assert used == {pilot_a.get_url(), pilot_b.get_url()}


def test_affinity_labels_pick_the_matching_pilot() -> None:
    pcs = PilotComputeService()
    eu = fork_pilot(pcs, affinity_datacenter_label="eu", affinity_machine_label="m1")
    us = fork_pilot(pcs, affinity_datacenter_label="us", affinity_machine_label="m2")
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    to_us = cds.submit_compute_units([{"executable": "/bin/true", "affinity_datacenter_label": "us"}] * 4)
    to_eu = cds.submit_compute_units([{"executable": "/bin/true", "affinity_datacenter_label": "eu",
                                       "affinity_machine_label": "m1"}] * 4)
    anywhere = cds.submit_compute_unit({"executable": "/bin/true", "affinity_datacenter_label": "mars"})
    cds.wait(timeout=60)
    assert {u.get_details()["pilot"] for u in to_us} == {us.get_url()}
    assert {u.get_details()["pilot"] for u in to_eu} == {eu.get_url()}
    assert anywhere.get_state() == State.Done


def test_unit_larger_than_every_pilot_fails_at_once() -> None:
    pcs = PilotComputeService()
    fork_pilot(pcs, slots=2)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    unit = cds.submit_compute_unit({"executable": "/bin/true", "number_of_processes": 3})
    assert unit.get_state() == State.Failed
    assert "3 slots" in unit.get_details()["reason"]
    cds.wait(timeout=10)


def test_wait_raises_naming_units_that_no_pilot_can_run() -> None:
    pcs = PilotComputeService()
    pilot = fork_pilot(pcs)
    pilot.cancel()
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    unit = cds.submit_compute_unit({"executable": "/bin/true"})
    with pytest.raises(PilotError, match=unit.id):
        cds.wait(timeout=30)
    with pytest.raises(PilotError, match="can never run"):
        unit.wait(timeout=30)


def test_wait_without_any_pilot_raises_instead_of_hanging() -> None:
    cds = ComputeDataService()
    unit = cds.submit_compute_unit({"executable": "/bin/true"})
    with pytest.raises(PilotError, match="no pilot"):
        cds.wait(timeout=30)
    assert unit.get_state() == State.Pending


def test_wait_timeout_raises_and_cancels_nothing() -> None:
    pcs = PilotComputeService()
    fork_pilot(pcs)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    unit = cds.submit_compute_unit({"executable": "/bin/sleep", "arguments": ["30"]})
    with pytest.raises(TimeoutError):
        cds.wait(timeout=0.5)
    with pytest.raises(TimeoutError):
        unit.wait(timeout=0.2)
    assert unit.get_state() in (State.Pending, State.Running)
    cds.cancel()
    assert unit.get_state() == State.Canceled


def test_details_of_a_failed_unit() -> None:
    pcs = PilotComputeService()
    pilot = fork_pilot(pcs)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    unit = cds.submit_compute_unit({"executable": "/bin/sh", "arguments": ["-c", "'exit 3'"], "name": "three"})
    assert unit.wait(timeout=30) == State.Failed
    details = unit.get_details()
    assert details["exit_code"] == 3 == unit.get_exit_code()
    assert details["reason"] == "exit code 3"
    assert details["name"] == "three"
    assert details["pilot"] == pilot.get_url()
    assert details["host"]
    assert details["submitted"] <= details["started"] <= details["finished"]
    assert Path(details["sandbox"]) == Path(unit.get_local_working_directory())
    assert details["executable"] == "/bin/sh"


def test_cancel_leaves_unfinished_units_canceled_and_pilots_canceled() -> None:
    pcs = PilotComputeService()
    pilot = fork_pilot(pcs)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    done = cds.submit_compute_unit({"executable": "/bin/true"})
    done.wait(timeout=30)
    running = cds.submit_compute_units([{"executable": "/bin/sleep", "arguments": ["60"]}] * 3)
    wait_for(lambda: running[0].get_state() == State.Running, 20, "a unit running")
    cds.cancel()
    assert done.get_state() == State.Done
    assert {u.get_state() for u in running} == {State.Canceled}
    assert pilot.get_state() == State.Canceled
    assert pilot.get_details()["finished"]


def test_direct_submission_to_a_pilot_and_pilot_wait() -> None:
    pcs = PilotComputeService()
    pilot = fork_pilot(pcs, slots=2)
    units = [pilot.submit_compute_unit({"executable": "/bin/echo", "arguments": ["hi", str(n)]}) for n in range(4)]
    pilot.wait(timeout=30)
    assert [u.get_state() for u in units] == [State.Done] * 4
    assert len(pilot.list_compute_units()) == 4
    assert pilot.get_free_nodes() == 2
    out = Path(units[3].get_local_working_directory(), "stdout.txt").read_text()
    assert out == "hi 3\n"
    too_big = pilot.submit_compute_unit({"executable": "/bin/true", "number_of_processes": 5})
    assert too_big.get_state() == State.Failed


def test_bad_descriptions_create_nothing() -> None:
    pcs = PilotComputeService()
    with pytest.raises(PilotError, match="service_url"):
        pcs.create_pilot({"number_of_processes": 1})
    with pytest.raises(PilotError, match="no resource adaptor"):
        pcs.create_pilot({"service_url": "nosuch://host"})
    assert pcs.list_pilots() == []
    cds = ComputeDataService()
    with pytest.raises(PilotError, match="executeable"):
        cds.submit_compute_units([{"executable": "/bin/true"}, {"executeable": "/bin/true"}])
    assert cds.list_compute_units() == []


def test_pilot_details_and_service_listing() -> None:
    pcs = PilotComputeService()
    pilot = fork_pilot(pcs, slots=3)
    details = pilot.get_details()
    assert details["state"] == State.Running
    assert details["slots"] == 3
    assert details["service_url"] == "fork://localhost"
    assert details["native_id"] and details["hosts"]
    assert details["submitted"] <= details["started"]
    assert [p.get_url() for p in pcs.list_pilots()] == [pilot.get_url()]
    assert pilot.id in Path(details["sandbox"]).name
    pcs.cancel()
    pcs.wait(timeout=30)
    assert pilot.get_state() == State.Canceled


def test_reconnected_unit_handle_sees_the_same_unit() -> None:
    pcs = PilotComputeService()
    fork_pilot(pcs)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    unit = cds.submit_compute_unit({"executable": "/bin/true"})
    again = ComputeUnit(cu_url=unit.get_url())
    assert again.wait(timeout=30) == State.Done
    assert os.path.isdir(again.get_local_working_directory())


def test_malformed_data_keys_are_refused_at_submission() -> None:
    cds = ComputeDataService()
    with pytest.raises(PilotError, match="input_data") as info:
        cds.submit_compute_unit({"executable": "/bin/true", "input_data": ["sqlite:///x#unit/cu-1"]})
    assert info.value.key == "input_data"
    with pytest.raises(PilotError, match="output_data"):
        cds.submit_compute_unit({"executable": "/bin/true", "output_data": [{"not-a-url": ["*.txt"]}]})
    with pytest.raises(PilotError, match="file_transfer"):
        cds.submit_compute_unit({"executable": "/bin/true", "file_transfer": ["a.txt to SUBJOB_WORK_DIR"]})
    with pytest.raises(PilotError, match="BIGJOB_WORK_DIR"):
        PilotComputeService().create_pilot({"service_url": "fork://localhost",
                                            "file_transfer": ["a > SUBJOB_WORK_DIR"]})
    assert cds.list_compute_units() == []


def test_local_scheme_is_the_fork_adaptor_too() -> None:
    pcs = PilotComputeService()
    pilot = pcs.create_pilot({"service_url": "local://localhost", "working_directory": os.getcwd()})
    unit = pilot.submit_compute_unit({"executable": "/bin/echo", "arguments": ["local"]})
    assert unit.wait(timeout=30) == State.Done
    assert pilot.get_details()["native_id"].partition("/")[2] == pilot.id
