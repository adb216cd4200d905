"""Transient batch failures on the real SLURM cluster: a fake ``sbatch`` first on PATH fails a
given number of times (as an overloaded slurmctld does) before handing over to the real one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pilot import PilotComputeService, State
from pilot.testing.fixtures import PilotEnv

pytestmark = pytest.mark.slurm

FLAKY_SBATCH = """#!/bin/sh
# A fake sbatch: fails the first $FAKE_SBATCH_FAILS calls like a busy controller, then runs the real one.
n=$(cat "$FAKE_SBATCH_COUNTER" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$FAKE_SBATCH_COUNTER"
if [ "$n" -le "$FAKE_SBATCH_FAILS" ]; then
  echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation" >&2
  exit 1
fi
exec "$REAL_SBATCH" "$@"
"""


@pytest.fixture
def flaky_sbatch(pilot_env: PilotEnv, slurm_cluster: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the fake sbatch first on PATH; returns its call counter file."""
    real = shutil.which("sbatch")
    assert real is not None
    bin_dir = pilot_env.root / "fake-bin"
    bin_dir.mkdir()
    script = bin_dir / "sbatch"
    script.write_text(FLAKY_SBATCH)
    script.chmod(0o755)
    counter = pilot_env.root / "sbatch-calls"
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(real).parent}:/usr/bin:/bin")
    monkeypatch.setenv("REAL_SBATCH", real)
    monkeypatch.setenv("FAKE_SBATCH_COUNTER", str(counter))
    monkeypatch.setenv("PILOT_PSIJ_POLL_INTERVAL", "0.3")
    monkeypatch.setenv("PILOT_PSIJ_RETRY_ATTEMPTS", "4")
    return counter


def jobs_named(name: str) -> list[str]:
    """Every job SLURM knows (any state) with this name."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-n", name, "-o", "%i"], capture_output=True, text=True,
                         check=True).stdout
    return out.split()


def test_submission_retried_past_transient_failures(pilot_env: PilotEnv, flaky_sbatch: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """sbatch fails twice, then succeeds: the pilot runs and exactly one batch job exists."""
    monkeypatch.setenv("FAKE_SBATCH_FAILS", "2")
    pcs = PilotComputeService()
    pilot = pcs.create_pilot({"service_url": "slurm://localhost", "walltime": 5,
                              "working_directory": str(pilot_env.work)})
    assert pilot.get_state() in (State.Pending, State.Running), pilot.get_details()["reason"]
    assert flaky_sbatch.read_text().strip() == "3"
    assert jobs_named(pilot.get_id()) == [pilot.get_details()["native_id"]]
    unit = pilot.submit_compute_unit({"executable": "/bin/true"})
    assert unit.wait(timeout=60) == State.Done
    pilot.cancel()


def test_submission_that_keeps_failing_fails_the_pilot(pilot_env: PilotEnv, flaky_sbatch: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """sbatch always fails: after a bounded number of attempts the pilot is Failed with the error."""
    monkeypatch.setenv("FAKE_SBATCH_FAILS", "1000")
    pcs = PilotComputeService()
    pilot = pcs.create_pilot({"service_url": "slurm://localhost", "working_directory": str(pilot_env.work)})
    assert pilot.get_state() == State.Failed
    reason = pilot.get_details()["reason"]
    assert reason.startswith("submission failed:")
    assert "Socket timed out on send/recv operation" in reason
    assert flaky_sbatch.read_text().strip() == "4"
    assert jobs_named(pilot.get_id()) == []
