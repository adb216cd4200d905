"""pbs:// and lsf:// pilots run the adaptor conformance suite against FAKE batch commands
(``pilot.testing.fake_batch``: ``qsub``/``qstat``/``qdel`` and ``bsub``/``bjobs``/``bkill`` that
run the job script on this host; no real PBS or LSF is involved)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pilot.testing import fake_batch
from pilot.testing.adaptor_conformance import AdaptorConformance
from pilot.testing.fixtures import PilotEnv


class FakeBatchConformance(AdaptorConformance):
    """The suite against one fake batch system; ``scheme`` names it."""

    scheme = ""
    startup_timeout = 60.0
    heartbeat_timeout = 6.0
    end_timeout = 30.0
    walltime_minutes = 0.1

    @pytest.fixture
    def fake(self, pilot_env: PilotEnv, monkeypatch: pytest.MonkeyPatch) -> Path:
        """The FAKE batch commands first on PATH; returns their state directory."""
        state = pilot_env.root / "fake-batch"
        bin_dir = fake_batch.install(pilot_env.root / "fake-bin", state)
        monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        monkeypatch.setenv("PILOT_PSIJ_POLL_INTERVAL", "0.2")
        return state

    @pytest.fixture
    def pilot_description(self, pilot_env: PilotEnv, fake: Path) -> dict[str, Any]:
        return {"service_url": f"{self.scheme}://localhost", "number_of_processes": 2,
                "working_directory": str(pilot_env.work)}


class TestPbsConformance(FakeBatchConformance):
    scheme = "pbs"

    @pytest.fixture
    def rejected_description(self, pilot_description: dict[str, Any]) -> tuple[dict[str, Any], str]:
        return {**pilot_description, "queue": "no-such-queue"}, "qsub: Unknown queue"

    def native_job_exists(self, native_id: str) -> bool:
        """FAKE ``qstat``: the job is known and not finished (F)."""
        out = subprocess.run(["qstat", "-f", "-F", "json", "-x", native_id], capture_output=True, text=True,
                             check=False, timeout=30).stdout
        job: dict[str, Any] = json.loads(out)["Jobs"].get(native_id) or {} if out.strip() else {}
        return bool(job.get("job_state", "F") != "F")


class TestLsfConformance(FakeBatchConformance):
    scheme = "lsf"

    @pytest.fixture
    def rejected_description(self, pilot_description: dict[str, Any]) -> tuple[dict[str, Any], str]:
        return {**pilot_description, "queue": "no-such-queue"}, "no-such-queue: No such queue"

    def native_job_exists(self, native_id: str) -> bool:
        """FAKE ``bjobs``: the job is known and pending or running."""
        out = subprocess.run(["bjobs", "-o", "jobid stat", "-json", "-a", native_id], capture_output=True,
                             text=True, check=True, timeout=30).stdout
        [record] = json.loads(out)["RECORDS"]
        return record.get("STAT") in ("PEND", "RUN")


@pytest.mark.parametrize(("walltime", "expected"), [(0.1, "#BSUB -W 0:1"), (1.5, "#BSUB -W 0:2")])
def test_lsf_limit_is_the_walltime_rounded_up_to_minutes(pilot_env: PilotEnv, monkeypatch: pytest.MonkeyPatch,
                                                          walltime: float, expected: str) -> None:
    """FAKE bsub: LSF takes ``-W`` in whole minutes; a pilot of 0.1 or 1.5 minutes asks for the
    minute above (never ``-W 0:0``, never a limit below the walltime the agent drains at)."""
    from pilot import PilotComputeService

    bin_dir = fake_batch.install(pilot_env.root / "fake-bin", pilot_env.root / "fake-batch")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    monkeypatch.setenv("FAKE_BATCH_HOLD", "30")  # stays queued: only its script matters
    pilot = PilotComputeService().create_pilot({"service_url": "lsf://localhost", "walltime": walltime,
                                                "working_directory": str(pilot_env.work)})
    script = fake_batch.jobs(pilot_env.root / "fake-batch")[pilot.get_details()["native_id"]]["script"]
    assert expected in script.splitlines()
    pilot.cancel()


def test_cobalt_pilot_environment_goes_through_a_private_pre_launch_script(
        pilot_env: PilotEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """FAKE Cobalt: the pilot's environment reaches its units (PSI/J's ``#COBALT --env`` comes
    after a blank line, which qsub does not read), through a pre-launch script only its owner
    may read."""
    from pilot import PilotComputeService, State
    from pilot.testing import wait_for

    bin_dir = fake_batch.install(pilot_env.root / "fake-bin", pilot_env.root / "fake-cobalt", flavour="cobalt")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    monkeypatch.setenv("PILOT_PSIJ_POLL_INTERVAL", "0.2")
    pilot = PilotComputeService().create_pilot({"service_url": "cobalt://localhost", "walltime": 5,
                                                "environment": {"FOO": "bar 'baz'"},
                                                "working_directory": str(pilot_env.work)})
    wait_for(lambda: pilot.get_state() != State.Pending, 60, "the pilot to start")
    unit = pilot.submit_compute_unit({"executable": "echo \"$FOO\""})
    assert unit.wait(timeout=30) == State.Done, unit.get_details()["reason"]
    assert (Path(unit.get_local_working_directory() or "") / "stdout.txt").read_text() == "bar 'baz'\n"
    assert (Path(pilot.get_details()["sandbox"]) / "pre_launch.sh").stat().st_mode & 0o777 == 0o600
    pilot.cancel()
