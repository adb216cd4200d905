"""The fork adaptor (``fork://localhost``) runs the adaptor conformance suite."""

from __future__ import annotations

from typing import Any

import pytest

from pilot.procs import session_members
from pilot.testing.adaptor_conformance import AdaptorConformance
from pilot.testing.fixtures import PilotEnv


class TestForkConformance(AdaptorConformance):
    startup_timeout = 30.0
    heartbeat_timeout = 4.0
    end_timeout = 20.0
    walltime_minutes = 0.1

    @pytest.fixture
    def pilot_description(self, pilot_env: PilotEnv) -> dict[str, Any]:
        return {"service_url": "fork://localhost", "number_of_processes": 2,
                "working_directory": str(pilot_env.work)}

    @pytest.fixture
    def rejected_description(self, pilot_description: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The fork adaptor refuses more slots than the host holds (its own limit stands in for
        a batch system's)."""
        return {**pilot_description, "number_of_processes": 2**31 - 1}, "number_of_processes"

    def native_job_exists(self, native_id: str) -> bool:
        """The fork pilot's "job" is the agent's session: ``<pid>@<host>/<pilot id>``, alive while
        any process of the session the agent leads lives."""
        pid = int(native_id.partition("@")[0])
        return bool(session_members(pid))
