"""What the Grid Engine adaptor adds to the conformance suite: how a description becomes a qsub
command line and a job script, checked on real Grid Engine jobs (``qstat -j``, their outputs)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pilot import ComputeDataService, PilotComputeService, State
from pilot.descriptions import PilotComputeDescription
from pilot.errors import PilotError
from pilot.plugin.manager import PluginManager
from pilot.plugin.types import PilotJobRequest
from pilot.testing import wait_for
from pilot.testing.fixtures import PilotEnv
from pilot_sge import SgeAdaptor

NASTY = "it's \"quoted\" $(touch /tmp/pilot-sge-injected) `id` $HOME ; exit 7 \\ end"


def qstat_job(job: str) -> str:
    """``qstat -j`` of a job ('' once Grid Engine no longer knows it)."""
    result = subprocess.run(["qstat", "-j", job], capture_output=True, text=True, timeout=30, check=False)
    return result.stdout if result.returncode == 0 else ""


def running_pilot(pcs: PilotComputeService, description: dict[str, Any]) -> Any:
    pilot = pcs.create_pilot(description)
    wait_for(lambda: pilot.get_state() not in (State.New, State.Pending), 90, "the pilot to start")
    assert pilot.get_state() == State.Running, pilot.get_details()["reason"]
    return pilot


@pytest.fixture
def description(pilot_env: PilotEnv, sge_queue: str) -> dict[str, Any]:
    return {"service_url": "sge://localhost", "queue": sge_queue, "working_directory": str(pilot_env.work)}


def test_the_entry_point_registers_the_sge_scheme() -> None:
    found = [ep for ep in importlib.metadata.entry_points(group="pilot") if ep.name == "sge"]
    assert found, "pilot-sge is not installed (pip install -e contrib/pilot-sge)"
    assert PluginManager().adaptor_for("sge").factory is SgeAdaptor
    assert "sge" not in PluginManager(blocked={"sge"}).adaptors


def test_another_host_is_refused() -> None:
    with pytest.raises(PilotError, match="use sge://localhost on a submit host"):
        SgeAdaptor("sge://login.example.org")


def test_an_unknown_extra_key_fails_the_pilot_naming_it(pilot_env: PilotEnv) -> None:
    pilot = PilotComputeService().create_pilot({"service_url": "sge://localhost", "extra": {"pe_name": "smp"},
                                                "working_directory": str(pilot_env.work)})
    assert pilot.get_state() == State.Failed
    assert "unknown extra key 'pe_name'" in pilot.get_details()["reason"]


def test_description_keys_become_qsub_options(description: dict[str, Any]) -> None:
    pcs = PilotComputeService()
    pilot = running_pilot(pcs, {**description, "number_of_processes": 2, "walltime": 1.5,
                                "extra": {"pe": "smp", "qsub_args": ["-A", "pilot-sge-test"]}})
    job = qstat_job(pilot.get_details()["native_id"])
    assert "h_rt=120" in job  # 1.5 minutes, rounded up to whole minutes
    assert "parallel environment:  smp range: 2" in job
    assert f"hard_queue_list:            {description['queue']}" in job
    assert "account:                    pilot-sge-test" in job
    pilot.cancel()


def test_environment_values_reach_units_verbatim_and_stay_off_the_spool(description: dict[str, Any]) -> None:
    pcs = PilotComputeService()
    pilot = running_pilot(pcs, {**description, "environment": {"NASTY": NASTY, "TOKEN": "s3cr3t-pilot-sge"}})
    sandbox = Path(pilot.get_details()["sandbox"])
    assert (sandbox / "pilot-job.sh").stat().st_mode & 0o777 == 0o700
    assert "s3cr3t-pilot-sge" not in qstat_job(pilot.get_details()["native_id"])
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    unit = cds.submit_compute_unit({"executable": "/usr/bin/printenv", "arguments": ["NASTY"]})
    cds.wait(timeout=60)
    assert unit.get_state() == State.Done, unit.get_details()["reason"]
    assert Path(unit.get_local_working_directory() or "", "stdout.txt").read_text() == NASTY + "\n"
    assert not os.path.exists("/tmp/pilot-sge-injected")
    pilot.cancel()


def test_a_bad_parallel_environment_fails_the_pilot_with_qsubs_message(description: dict[str, Any]) -> None:
    pilot = PilotComputeService().create_pilot({**description, "number_of_processes": 2,
                                                "extra": {"pe": "no-such-pe"}})
    assert pilot.get_state() == State.Failed
    assert 'parallel environment "no-such-pe" does not exist' in pilot.get_details()["reason"]


@pytest.mark.parametrize(("code", "state"), [(0, State.Done), (3, State.Failed)])
def test_status_follows_a_job_to_its_end(pilot_env: PilotEnv, sge_queue: str, code: int, state: State) -> None:
    """A job running a stand-in for the agent: the pre-commands run first, in the sandbox, with
    the submitter's umask, and its exit status (from qacct, once it left qstat) decides Done or
    Failed."""
    adaptor = SgeAdaptor("sge://localhost")
    sandbox = pilot_env.work / f"job-{code}"
    request = PilotJobRequest(
        "pilot-sge-test", PilotComputeDescription.from_dict({"service_url": "sge://localhost", "queue": sge_queue}),
        sandbox, ("/bin/sh", "-c", 'test -f pre-ran && echo "ran $CODE $(umask)" && exit "$CODE"'),
        {"CODE": str(code)}, ("touch pre-ran",))
    old = os.umask(0o027)  # Grid Engine itself starts jobs with 022
    try:
        job = adaptor.submit(request)
    finally:
        os.umask(old)
    status = wait_for(lambda: (s := adaptor.status(job)).state.is_final and s, 60, f"job {job} to end")
    assert status.state == state, status.message
    assert (f"exit status {code}" in status.message) == (code != 0)
    assert (sandbox / "agent.log").read_text() == f"ran {code} 0027\n"
    adaptor.cancel(job)  # gone already: not an error


def test_a_job_grid_engine_cannot_start_fails_the_pilot_with_its_reason(description: dict[str, Any]) -> None:
    """A job in error state (Eqw: here its working directory does not exist on the execution
    host) fails the pilot with Grid Engine's error reason, and the job is deleted."""
    pilot = PilotComputeService().create_pilot({**description, "extra": {"qsub_args": ["-wd", "/nonexistent/wd"]}})
    native_id = pilot.get_details()["native_id"]
    wait_for(lambda: pilot.get_state().is_final, 60, "the pilot to fail")
    assert pilot.get_state() == State.Failed
    reason = pilot.get_details()["reason"]
    assert f"Grid Engine job {native_id} is in error state" in reason
    assert "/nonexistent/wd" in reason
    wait_for(lambda: not qstat_job(native_id), 60, f"job {native_id} to be deleted")
