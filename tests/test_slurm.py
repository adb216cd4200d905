"""Pilots on the real three-node SLURM test cluster (tests/infra/start-slurm.sh, nodes n1..n3).

Each test has its own store and sandbox (``pilot_env``); the tests share the cluster and are
safe to run in parallel (12 CPUs; every pilot asks for at most 6)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pilot import ComputeDataService, PilotComputeService, State
from pilot.testing import wait_for
from pilot.testing.fixtures import PilotEnv

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[1]
POLL = "0.3"  # PSI/J queue polling interval in these tests (seconds)


@pytest.fixture
def slurm_env(pilot_env: PilotEnv, slurm_cluster: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> PilotEnv:
    """``pilot_env`` plus a short PSI/J polling interval."""
    monkeypatch.setenv("PILOT_PSIJ_POLL_INTERVAL", POLL)
    return pilot_env




def active_jobs() -> set[str]:
    """Ids of the jobs SLURM still has pending, running or completing (what plain squeue lists)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def job_state(native_id: str) -> str:
    """SLURM's state of a job, including finished ones ('' once it left squeue)."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", native_id, "-o", "%T"],
                         capture_output=True, text=True, check=False).stdout
    return out.strip()


def slurm_pilot(pcs: PilotComputeService, env: PilotEnv, **extra: Any) -> Any:
    description = {"service_url": "slurm://localhost", "number_of_processes": 1,
                   "working_directory": str(env.work), **extra}
    return pcs.create_pilot(description)


def wait_running(pilot: Any, timeout: float = 60.0) -> None:
    state = wait_for(lambda: (s := pilot.get_state()) != State.Pending and s, timeout, "the pilot to start")
    assert state == State.Running, pilot.get_details()["reason"]


def read_output(unit: Any) -> str:
    return (Path(unit.get_local_working_directory()) / "stdout.txt").read_text().strip()


def test_seed_example_runs_on_slurm(slurm_env: PilotEnv) -> None:
    """The seed example, unchanged except for ``slurm://localhost``, runs a Done unit."""
    seed = (REPO / "docs" / "examples" / "seed.py").read_text()
    assert "'fork://localhost'" in seed
    script = slurm_env.root / "seed_slurm.py"
    script.write_text(seed.replace("'fork://localhost'", "'slurm://localhost'"))
    result = subprocess.run([sys.executable, str(script)], cwd=slurm_env.root, capture_output=True, text=True,
                            timeout=120, env={**os.environ}, check=False)
    assert result.returncode == 0, result.stderr
    assert "unit Done exit code 0" in result.stdout
    outputs = list((slurm_env.root / "work").glob("pilot-*/cu-*/stdout.txt"))
    assert len(outputs) == 1
    assert outputs[0].read_text().strip()  # the date


def test_three_node_pilot_runs_units_on_every_node(slurm_env: PilotEnv, slurm_cluster: tuple[str, ...]) -> None:
    """Units of a pilot spanning three nodes run on all of them (each records SLURMD_NODENAME)."""
    pcs = PilotComputeService()
    pilot = slurm_pilot(pcs, slurm_env, number_of_processes=6, processes_per_node=2, walltime=5)
    wait_running(pilot)
    assert sorted(pilot.get_details()["hosts"]) == sorted(slurm_cluster)
    assert pilot.get_details()["slots"] == 6
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    units = cds.submit_compute_units([{"executable": "sleep 0.5; echo $SLURMD_NODENAME"}] * 18)
    cds.wait(timeout=120)
    assert [u.get_state() for u in units] == [State.Done] * 18
    seen = {read_output(u) for u in units}
    assert seen == set(slurm_cluster)
    for unit in units:  # the recorded host is where the unit really ran
        assert unit.get_details()["host"] == read_output(unit)
    cds.cancel()


def test_mpi_unit_spans_two_nodes(slurm_env: PilotEnv) -> None:
    """An mpi unit of two ranks on a two-node pilot starts one rank per node through srun."""
    pcs = PilotComputeService()
    pilot = slurm_pilot(pcs, slurm_env, number_of_processes=2, processes_per_node=1, walltime=5)
    wait_running(pilot)
    unit = pilot.submit_compute_unit({"executable": "echo $SLURMD_NODENAME $SLURM_PROCID",
                                      "number_of_processes": 2, "spmd_variation": "mpi"})
    assert unit.wait(timeout=60) == State.Done, unit.get_details()["reason"]
    lines = sorted(read_output(unit).splitlines())
    assert len(lines) == 2
    nodes = {line.split()[0] for line in lines}
    ranks = {line.split()[1] for line in lines}
    assert len(nodes) == 2
    assert nodes <= set(pilot.get_details()["hosts"])
    assert ranks == {"0", "1"}
    pilot.cancel()


def test_walltime_ends_pilot_done_and_hands_back_queued_units(slurm_env: PilotEnv) -> None:
    """At its walltime the pilot drains: the running unit Fails with the reason, the queued one
    goes back to the service, the pilot is Done and its batch job ends."""
    pcs = PilotComputeService()
    pilot = slurm_pilot(pcs, slurm_env, walltime=0.1)
    wait_running(pilot)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    running, queued = cds.submit_compute_units([{"executable": "sleep 120"}, {"executable": "sleep 120"}])
    state = wait_for(lambda: (s := pilot.get_state()).is_final and s, 90, "the pilot to end")
    assert state == State.Done, pilot.get_details()["reason"]
    assert running.get_state() == State.Failed
    assert running.get_details()["reason"] == "pilot walltime reached"
    assert queued.get_state() == State.Pending
    assert queued.get_details()["pilot"] is None
    native_id = pilot.get_details()["native_id"]
    wait_for(lambda: native_id not in active_jobs(), 60, "the batch job to end")
    cds.cancel()


def test_cancel_removes_the_batch_job(slurm_env: PilotEnv) -> None:
    """cancel() ends the pilot Canceled, its running unit Canceled, and the job leaves squeue."""
    pcs = PilotComputeService()
    pilot = slurm_pilot(pcs, slurm_env, walltime=5)
    wait_running(pilot)
    unit = pilot.submit_compute_unit({"executable": "sleep 120"})
    wait_for(lambda: unit.get_state() == State.Running, 30, "the unit to run")
    native_id = pilot.get_details()["native_id"]
    assert native_id in active_jobs()
    pilot.cancel()
    assert pilot.get_state() == State.Canceled
    wait_for(lambda: native_id not in active_jobs(), 60, "the job to leave squeue")
    assert job_state(native_id) in ("CANCELLED", "")
    assert unit.get_state() == State.Canceled


def test_rejected_job_fails_with_sbatch_message(slurm_env: PilotEnv) -> None:
    """A pilot for a partition that does not exist is Failed with sbatch's own words."""
    pcs = PilotComputeService()
    pilot = slurm_pilot(pcs, slurm_env, queue="no-such-partition")
    assert pilot.get_state() == State.Failed
    reason = pilot.get_details()["reason"]
    assert reason.startswith("submission failed:")
    assert "invalid partition" in reason.lower()
    assert "no-such-partition" in reason


def test_reconnect_from_another_process_and_cancel(slurm_env: PilotEnv) -> None:
    """Another process holding only the pilot URL sees the batch job's state and cancels it."""
    pcs = PilotComputeService()
    pilot = slurm_pilot(pcs, slurm_env, walltime=5)
    wait_running(pilot)
    native_id = pilot.get_details()["native_id"]
    code = textwrap.dedent("""
        import sys, time
        from pilot import PilotCompute
        from pilot.session import default_session
        pc = PilotCompute(pilot_url=sys.argv[1])
        details = pc.get_details()
        adaptor = default_session().adaptor(details["service_url"])
        deadline = time.monotonic() + 30
        while (status := adaptor.status(details["native_id"])).state == "Unknown" and time.monotonic() < deadline:
            time.sleep(0.1)
        print("batch", status.state, details["native_id"])
        pc.cancel()
        print("after cancel", pc.get_state())
    """)
    result = subprocess.run([sys.executable, "-c", code, pilot.get_url()], capture_output=True, text=True,
                            timeout=90, cwd=slurm_env.root, check=False)
    assert result.returncode == 0, result.stderr
    assert f"batch Running {native_id}" in result.stdout
    assert "after cancel Canceled" in result.stdout
    assert pilot.get_state() == State.Canceled
    wait_for(lambda: native_id not in active_jobs(), 60, "the job to leave squeue")
