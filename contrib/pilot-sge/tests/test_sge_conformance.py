"""sge:// pilots run the adaptor conformance suite against a real Grid Engine (stamped by
``pilot new-plugin sge --kind adaptor``, then pointed at the queue and at ``qstat``)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from pilot.testing.adaptor_conformance import AdaptorConformance
from pilot.testing.fixtures import PilotEnv


class TestSgeConformance(AdaptorConformance):
    startup_timeout = 90.0
    heartbeat_timeout = 8.0
    walltime_minutes = 0.1  # h_rt is whole minutes (60 s here); the agent drains after 6 s

    @pytest.fixture
    def pilot_description(self, pilot_env: PilotEnv, sge_queue: str) -> dict[str, Any]:
        return {"service_url": "sge://localhost", "number_of_processes": 2, "queue": sge_queue,
                "working_directory": str(pilot_env.work)}

    @pytest.fixture
    def rejected_description(self, pilot_description: dict[str, Any]) -> tuple[dict[str, Any], str]:
        return {**pilot_description, "queue": "no-such-queue"}, 'job requests unknown queue "no-such-queue"'

    def native_job_exists(self, native_id: str) -> bool:
        """``qstat -j`` still knows the job (queued, running or being deleted)."""
        return subprocess.run(["qstat", "-j", native_id], capture_output=True, timeout=30, check=False).returncode == 0
