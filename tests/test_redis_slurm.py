"""Many nodes through Redis: a three-node SLURM pilot (nodes n1..n3 of tests/infra) whose agent
runs on the first node and starts units on the others through one executor per node (started
with srun), coordinated through the real redis-server (the full 5,000-unit run, about 20 s); and
a batch job killed by the scheduler (scancel from outside)."""

from __future__ import annotations

import collections
import subprocess
import time
from pathlib import Path

import pytest

from pilot import ComputeDataService, PilotComputeService, State
from pilot.testing import wait_for
from pilot.testing.fixtures import PilotEnv

pytestmark = [pytest.mark.slurm, pytest.mark.redis]
UNITS = 5000


@pytest.fixture
def env(pilot_env: PilotEnv, slurm_cluster: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> PilotEnv:
    monkeypatch.setenv("PILOT_PSIJ_POLL_INTERVAL", "0.3")
    return pilot_env




def test_three_node_pilot_runs_every_unit_once(env: PilotEnv, redis_store_url: str, redis_password: str,
                                               slurm_cluster: tuple[str, ...]) -> None:
    """Every unit of a run on a 3 x 4-slot SLURM pilot is Done exactly once, on all three nodes."""
    pcs = PilotComputeService(redis_store_url)
    pilot = pcs.create_pilot({"service_url": "slurm://localhost", "number_of_processes": 12,
                              "processes_per_node": 4, "walltime": 10, "working_directory": str(env.work)})
    try:
        state = wait_for(lambda: (s := pilot.get_state()) != State.Pending and s, 90, "the pilot to start")
        assert state == State.Running, pilot.get_details()["reason"]
        assert sorted(pilot.get_details()["hosts"]) == sorted(slurm_cluster)
        assert pilot.get_url().startswith("redis://127.0.0.1:") and redis_password not in pilot.get_url()
        log = env.root / "ran.log"
        cds = ComputeDataService(coordination_url=redis_store_url)
        cds.add_pilot_compute_service(pcs)
        units = cds.submit_compute_units(
            [{"executable": f"echo u{n} $SLURMD_NODENAME >> {log}", "name": f"u{n}"} for n in range(UNITS)])
        cds.wait(timeout=240)
        records = cds._store.find_units(cds_id=cds.id, fields=("id", "state", "exit_code", "host"))
        assert len(records) == UNITS
        assert collections.Counter(r["state"] for r in records) == {State.Done: UNITS}
        assert {r["exit_code"] for r in records} == {0}
        assert {r["host"] for r in records} == set(slurm_cluster)
        lines = Path(log).read_text().split("\n")[:-1]
        ran = collections.Counter(line.split()[0] for line in lines)
        assert set(ran) == {f"u{n}" for n in range(UNITS)}
        assert max(ran.values()) == 1, [name for name, count in ran.items() if count > 1]
        assert {line.split()[1] for line in lines} == set(slurm_cluster)
        assert len(units) == UNITS
    finally:
        pcs.cancel()


def test_scancel_from_outside_ends_the_pilot(env: PilotEnv, redis_store_url: str) -> None:
    """A batch job the scheduler kills leaves its pilot Failed (or Canceled) with a reason, never
    Running; its running unit ends too, and its queued unit goes back to the service."""
    pcs = PilotComputeService(redis_store_url)
    pilot = pcs.create_pilot({"service_url": "slurm://localhost", "number_of_processes": 1, "walltime": 5,
                              "working_directory": str(env.work)})
    try:
        wait_for(lambda: pilot.get_state() == State.Running, 90, "the pilot to run")
        cds = ComputeDataService(coordination_url=redis_store_url)
        cds.add_pilot_compute_service(pcs)
        running, queued = cds.submit_compute_units([{"executable": "sleep 300"}, {"executable": "sleep 300"}])
        wait_for(lambda: running.get_state() == State.Running, 60, "the unit to run")
        native_id = pilot.get_details()["native_id"]
        subprocess.run(["scancel", native_id], check=True)
        state = wait_for(lambda: (s := pilot.get_state()).is_final and s, 90, "the pilot to end")
        assert state in (State.Failed, State.Canceled)
        details = pilot.get_details()
        if state == State.Failed:
            assert details["reason"]
        assert running.get_state() in (State.Failed, State.Canceled)
        if running.get_state() == State.Failed:
            assert running.get_details()["reason"]
        assert queued.get_state() == State.Pending and queued.get_details()["pilot"] is None
        time.sleep(1)
        assert pilot.get_state() == state, "a final pilot never changes"
        cds.cancel()
    finally:
        pcs.cancel()
