"""slurm:// pilots (pilot-psij) run the adaptor conformance suite on the real three-node SLURM
test cluster (tests/infra/start-slurm.sh, nodes n1..n3)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from pilot.testing.adaptor_conformance import AdaptorConformance
from pilot.testing.fixtures import PilotEnv

pytestmark = pytest.mark.slurm


class TestSlurmConformance(AdaptorConformance):
    startup_timeout = 90.0
    heartbeat_timeout = 8.0
    end_timeout = 60.0
    walltime_minutes = 0.1  # SLURM's limit rounds up to a minute; the agent drains after 6 s

    @pytest.fixture
    def pilot_description(self, pilot_env: PilotEnv, slurm_cluster: tuple[str, ...],
                          monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        monkeypatch.setenv("PILOT_PSIJ_POLL_INTERVAL", "0.3")
        return {"service_url": "slurm://localhost", "number_of_processes": 2,
                "working_directory": str(pilot_env.work), "walltime": 5}

    @pytest.fixture
    def rejected_description(self, pilot_description: dict[str, Any]) -> tuple[dict[str, Any], str]:
        return {**pilot_description, "queue": "no-such-partition"}, "invalid partition specified: no-such-partition"

    def native_job_exists(self, native_id: str) -> bool:
        """``squeue`` still lists the job (pending, running or completing)."""
        out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True,
                             timeout=30).stdout
        return native_id in out.split()
