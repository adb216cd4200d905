"""cobalt:// pilots against FAKE Cobalt commands (``pilot.testing.fake_batch`` with
``flavour="cobalt"``: a ``qsub`` that reads ``#COBALT`` directives and refuses what Cobalt's own
qsub refuses, Cobalt's ``qstat -l`` report and ``qdel``; the job runs on this host with the
``COBALT_*`` environment). No real Cobalt is involved: this checks what PSI/J's cobalt executor
writes and parses, and the adaptor suite through it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pilot import PilotComputeService, State
from pilot.testing import fake_batch, wait_for
from pilot.testing.adaptor_conformance import AdaptorConformance
from pilot.testing.fixtures import PilotEnv


@pytest.fixture
def cobalt(pilot_env: PilotEnv, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The FAKE Cobalt commands first on PATH; returns their state directory."""
    state = pilot_env.root / "fake-cobalt"
    bin_dir = fake_batch.install(pilot_env.root / "fake-cobalt-bin", state, flavour="cobalt")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    monkeypatch.setenv("PILOT_PSIJ_POLL_INTERVAL", "0.2")
    return state


def known_to_qstat(native_id: str) -> bool:
    """FAKE Cobalt ``qstat``: the job is still listed (Cobalt forgets ended jobs)."""
    result = subprocess.run(["qstat", "-l", "--header=Jobid:State", native_id], capture_output=True, text=True,
                            check=False, timeout=30)
    return result.returncode == 0 and f"Jobid: {native_id}" in result.stdout


class TestCobaltConformance(AdaptorConformance):
    startup_timeout = 60.0
    heartbeat_timeout = 6.0
    end_timeout = 30.0

    @pytest.fixture
    def pilot_description(self, pilot_env: PilotEnv, cobalt: Path) -> dict[str, Any]:
        return {"service_url": "cobalt://localhost", "number_of_processes": 2, "walltime": 10,
                "working_directory": str(pilot_env.work)}

    @pytest.fixture
    def rejected_description(self, pilot_description: dict[str, Any]) -> tuple[dict[str, Any], str]:
        return {**pilot_description, "queue": "no-such-queue"}, "Queue 'no-such-queue' does not exist"

    def native_job_exists(self, native_id: str) -> bool:
        return known_to_qstat(native_id)


def start(pilot_env: PilotEnv, **extra: Any) -> Any:
    pilot = PilotComputeService().create_pilot({
        "service_url": "cobalt://localhost", "number_of_processes": 4, "processes_per_node": 2, "walltime": 7,
        "working_directory": str(pilot_env.work), **extra})
    state = wait_for(lambda: (s := pilot.get_state()) != State.Pending and s, 60, "the pilot to start")
    assert state == State.Running, pilot.get_details()["reason"]
    return pilot


def unit_output(pilot: Any, command: str) -> list[str]:
    unit = pilot.submit_compute_unit({"executable": command})
    assert unit.wait(timeout=30) == State.Done, unit.get_details()["reason"]
    return (Path(unit.get_local_working_directory()) / "stdout.txt").read_text().split()


def test_job_script_as_cobalt_reads_it(pilot_env: PilotEnv, cobalt: Path) -> None:
    """The job Cobalt ran carries the description: its queue, node and process counts and
    walltime as Cobalt read them; units see the Cobalt job, and the agent found its slots in it."""
    pilot = start(pilot_env, queue="debug", project="proj1")
    job = fake_batch.jobs(cobalt)[pilot.get_details()["native_id"]]
    assert (job["system"], job["queue"], job["nodes"], job["procs"], job["walltime"]) == ("cobalt", "debug", 2, 4, 7)
    assert unit_output(pilot, "echo $COBALT_JOBID $COBALT_PARTSIZE") == [job["id"], "1"]
    assert pilot.get_details()["slots"] == 4
    pilot.cancel()
    assert pilot.get_state() == State.Canceled
    wait_for(lambda: not known_to_qstat(job["id"]), 30, "the job to leave qstat")


@pytest.mark.parametrize(("argv", "message"), [
    (["--nodecount=1"], "'time' not provided"),
    (["--time=10"], "'nodecount' not provided"),
    (["--time=''", "--nodecount=1"], "invalid time specification: illegal value"),
    (["--time=10", "--nodecount=1", "--queue=nope"], "Queue 'nope' does not exist"),
])
def test_qsub_refuses_as_cobalt_does(tmp_path: Path, cobalt: Path, argv: list[str], message: str) -> None:
    """FAKE Cobalt qsub: what Cobalt's qsub refuses, with its message and exit status 1."""
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\ntrue\n")
    script.chmod(0o755)
    result = subprocess.run(["qsub", *argv, str(script)], capture_output=True, text=True, check=False, timeout=30)
    assert result.returncode == 1
    assert message in result.stderr
    assert fake_batch.jobs(cobalt) == {}


def test_pilot_environment_reaches_the_units(pilot_env: PilotEnv, cobalt: Path) -> None:
    """The pilot's ``environment`` reaches its units on Cobalt, spaces included (PSI/J's
    ``#COBALT --env`` lines come after a blank line, where Cobalt's qsub stops reading)."""
    pilot = start(pilot_env, environment={"FOO": "bar baz"})
    try:
        assert unit_output(pilot, "echo $FOO") == ["bar", "baz"]
    finally:
        pilot.cancel()
