"""Late binding by pull while one pilot still waits in its batch queue.

Units of a ``ComputeDataService`` wait in its queue; only the agent of a *running* pilot claims
them. So a pilot queued in its batch system gets nothing: every unit runs on the pilots that
are up, ``cds.wait()`` returns without the queued pilot, and once the queued pilot starts its
agent takes a share of the units still queued.

Two batch systems:

- the real three-node SLURM test cluster: the queued pilot's job depends on a held "blocker" job
  (``extra={"slurm.dependency": "afterany:<blocker>"}``), so SLURM keeps it PENDING (reason
  Dependency) whatever else runs on the cluster, and ``scancel`` of the blocker lets it start.
  The blocker is held (``sbatch --hold``), so it takes no CPU from the tests running beside;
- FAKE PBS commands (``pilot.testing.fake_batch``, no real PBS can run here), which keep the job
  queued for ``FAKE_BATCH_HOLD`` seconds, beside a ``fork://`` pilot.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pilot import ComputeDataService, PilotComputeService, State
from pilot.testing import fake_batch, wait_for
from pilot.testing.fixtures import PilotEnv

POLL = "0.3"  # PSI/J queue polling interval in these tests (seconds)


def wait_running(pilot: Any, timeout: float = 60.0) -> None:
    state = wait_for(lambda: (s := pilot.get_state()) != State.Pending and s, timeout, "the pilot to start")
    assert state == State.Running, pilot.get_details()["reason"]


def pilots_of(units: Sequence[Any]) -> Counter[str | None]:
    """How many of ``units`` each pilot (URL) was given."""
    return Counter(u.get_details()["pilot"] for u in units)


def states_of(units: Sequence[Any]) -> Counter[str]:
    return Counter(str(u.get_state()) for u in units)


def sleeps(n: int, seconds: float) -> list[dict[str, Any]]:
    return [{"executable": "/bin/sleep", "arguments": [seconds]} for _ in range(n)]


# --- SLURM -----------------------------------------------------------------------------------

@pytest.fixture
def slurm_env(pilot_env: PilotEnv, slurm_cluster: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> PilotEnv:
    """``pilot_env`` plus a short PSI/J polling interval."""
    monkeypatch.setenv("PILOT_PSIJ_POLL_INTERVAL", POLL)
    return pilot_env


@pytest.fixture
def blocker(slurm_env: PilotEnv) -> Iterator[str]:
    """A held SLURM job (no CPUs while held) that other jobs can depend on; canceled afterwards."""
    out = subprocess.run(["sbatch", "--parsable", "--hold", "-J", "late-binding-blocker", "-o", "/dev/null",
                          "-D", str(slurm_env.root), "--wrap", "sleep 600"],
                         capture_output=True, text=True, timeout=30, check=True)
    job_id = out.stdout.strip().split(";")[0]
    try:
        yield job_id
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30, check=False)


def squeue_state(native_id: str) -> tuple[str, str]:
    """SLURM's state and reason of a job (('', '') once it left squeue)."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", native_id, "-o", "%T %r"],
                         capture_output=True, text=True, check=False).stdout.split()
    return (out[0], out[1]) if len(out) >= 2 else ("", "")


@pytest.mark.slurm
def test_queued_slurm_pilot_gets_units_only_once_it_runs(slurm_env: PilotEnv, blocker: str) -> None:
    """Real SLURM: with one running 1-slot pilot and one pilot PENDING in SLURM, 20 units all
    run on the running pilot and end Done within 30 s; the queued pilot holds none. Once its
    job is let go (``scancel`` of the job it depends on) it becomes Running and runs a share
    of the 30 units then queued; all end Done."""
    work = str(slurm_env.work)
    pcs_running, pcs_queued = PilotComputeService(), PilotComputeService()
    cds = None
    try:
        running = pcs_running.create_pilot({"service_url": "slurm://localhost", "number_of_processes": 1,
                                            "walltime": 2, "working_directory": work})
        queued = pcs_queued.create_pilot({"service_url": "slurm://localhost", "number_of_processes": 2,
                                          "walltime": 2, "working_directory": work,
                                          "extra": {"slurm.dependency": f"afterany:{blocker}"}})
        wait_running(running)
        queued_job = queued.get_details()["native_id"]
        assert queued_job, queued.get_details()["reason"]
        assert squeue_state(queued_job) == ("PENDING", "Dependency")
        assert queued.get_state() == State.Pending

        cds = ComputeDataService()
        cds.add_pilot_compute_service(pcs_running)
        cds.add_pilot_compute_service(pcs_queued)

        # first half: the queued pilot gets nothing, cds.wait() does not wait for it
        start = time.monotonic()
        first = cds.submit_compute_units(sleeps(20, 0.2))
        cds.wait(timeout=30)
        elapsed = time.monotonic() - start
        assert states_of(first) == {"Done": 20}, [u.get_details()["reason"] for u in first]
        assert pilots_of(first) == {running.get_url(): 20}
        assert elapsed < 30
        assert queued.get_state() == State.Pending
        assert squeue_state(queued_job)[0] == "PENDING"
        assert queued.list_compute_units() == []

        # second half: more units queued, then the queued pilot starts and takes a share
        second = cds.submit_compute_units(sleeps(30, 1))
        wait_for(lambda: states_of(second)["Done"] >= 2, 30, "the running pilot to work through the queue")
        assert queued.list_compute_units() == []  # still queued in SLURM: still nothing for it
        subprocess.run(["scancel", blocker], capture_output=True, timeout=30, check=True)
        wait_running(queued, timeout=60)
        cds.wait(timeout=60)
        assert states_of(second) == {"Done": 30}, [u.get_details()["reason"] for u in second]
        shares = pilots_of(second)
        assert set(shares) == {running.get_url(), queued.get_url()}, shares
        assert shares[queued.get_url()] >= 1, shares
        assert states_of(first) == {"Done": 20}
    finally:
        if cds is not None:
            cds.cancel()
        pcs_running.cancel()
        pcs_queued.cancel()


# --- FAKE PBS --------------------------------------------------------------------------------

@pytest.fixture
def fake_pbs(pilot_env: PilotEnv, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The FAKE batch commands (qsub/qstat/qdel) first on PATH; returns their state directory."""
    pytest.importorskip("pilot_psij", reason="pilot-psij is not installed (pip install -e plugins/psij)")
    state = pilot_env.root / "fake-batch"
    bin_dir = fake_batch.install(pilot_env.root / "fake-bin", state)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    monkeypatch.setenv("PILOT_PSIJ_POLL_INTERVAL", "0.2")
    return state


def test_queued_fake_pbs_pilot_gets_units_only_once_it_runs(pilot_env: PilotEnv, fake_pbs: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """FAKE PBS (``pilot.testing.fake_batch``: fake qsub/qstat/qdel; no real PBS is involved)
    holds the pbs:// pilot's job queued for 8 s beside a running 1-slot fork:// pilot. The 8
    units submitted meanwhile all run on the fork pilot and ``cds.wait()`` returns while the
    PBS pilot is still Pending. Once the fake job starts, the PBS pilot is Running and takes a
    share of the units submitted later; all end Done."""
    work = str(pilot_env.work)
    fork_pcs, pbs_pcs = PilotComputeService(), PilotComputeService()
    cds = None
    try:
        fork = fork_pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 1,
                                      "working_directory": work})
        wait_running(fork, timeout=30)
        monkeypatch.setenv("FAKE_BATCH_HOLD", "8")  # read by the fake qsub's job runner
        pbs = pbs_pcs.create_pilot({"service_url": "pbs://localhost", "number_of_processes": 2, "walltime": 5,
                                    "working_directory": work})
        pbs_job = pbs.get_details()["native_id"]
        assert pbs_job, pbs.get_details()["reason"]
        assert pbs.get_state() == State.Pending

        cds = ComputeDataService()
        cds.add_pilot_compute_service(fork_pcs)
        cds.add_pilot_compute_service(pbs_pcs)
        first = cds.submit_compute_units(sleeps(8, 0.2))
        cds.wait(timeout=30)
        assert states_of(first) == {"Done": 8}, [u.get_details()["reason"] for u in first]
        assert pilots_of(first) == {fork.get_url(): 8}
        # the fake job was still queued all along (so this is not a race won by the fork pilot)
        assert fake_batch.jobs(fake_pbs)[pbs_job]["state"] == "queued"
        assert pbs.get_state() == State.Pending
        assert pbs.list_compute_units() == []

        wait_running(pbs, timeout=30)
        later = cds.submit_compute_units(sleeps(8, 1))
        cds.wait(timeout=30)
        assert states_of(later) == {"Done": 8}, [u.get_details()["reason"] for u in later]
        shares = pilots_of(later)
        assert shares[pbs.get_url()] >= 1, shares
        assert set(shares) <= {fork.get_url(), pbs.get_url()}, shares
    finally:
        if cds is not None:
            cds.cancel()
        fork_pcs.cancel()
        pbs_pcs.cancel()
