"""A site resource on a batch system (the FAKE PBS commands of ``pilot.testing.fake_batch``,
not a real PBS): its defaults reach the job script, its pre-commands run before the agent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pilot import PilotComputeService, State
from pilot.testing import fake_batch
from pilot.testing.fixtures import PilotEnv

pytest.importorskip("pilot_psij")


def test_site_resource_on_fake_pbs(pilot_env: PilotEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    state = pilot_env.root / "fake-batch"
    bin_dir = fake_batch.install(pilot_env.root / "fake-bin", state)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("PILOT_PSIJ_POLL_INTERVAL", "0.2")
    config = pilot_env.root / "resources.toml"
    config.write_text(f"""
[resources.fakepbs]
service_url = "pbs://localhost"
queue = "debug"
project = "proj7"
walltime = 10
working_directory = "{pilot_env.work}"
pre_commands = ["export SITE_VAR=from-site", "cd /"]
""")
    monkeypatch.setenv("PILOT_SITE_CONFIG", str(config))
    pilot = PilotComputeService().create_pilot({"resource": "fakepbs", "number_of_processes": 2})
    script = fake_batch.jobs(state)[pilot.get_details()["native_id"]]["script"]
    assert "#PBS -q debug" in script
    assert "#PBS -A proj7" in script
    assert "#PBS -l walltime=0:10:0" in script
    assert (Path(pilot.get_details()["sandbox"]) / "pre_launch.sh").read_text().splitlines()[1:] == [
        "export SITE_VAR=from-site", "cd /"]
    unit = pilot.submit_compute_unit({"executable": "echo $SITE_VAR"})
    assert unit.wait(timeout=30) == State.Done
    assert (Path(unit.get_local_working_directory()) / "stdout.txt").read_text().strip() == "from-site"
    pilot.cancel()
