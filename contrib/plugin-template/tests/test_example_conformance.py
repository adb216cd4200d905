"""``example://`` passes the adaptor conformance suite: the tests every adaptor must pass.

Run it with ``pytest`` once the distribution is installed (``pip install -e '.[test]'``): the
suite builds the adaptor through the entry point, like pilot does, and the agents it starts
load the installed plugins.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from pilot.plugin.manager import PluginManager
from pilot.testing.adaptor_conformance import AdaptorConformance
from pilot.testing.fixtures import PilotEnv


class TestExampleConformance(AdaptorConformance):
    """The suite on ``example://localhost``. For a batch system: point ``pilot_description`` at
    a queue that exists, make ``rejected_description`` something the system refuses (and the
    words of its refusal), ask the system in ``native_job_exists``, and raise
    ``startup_timeout`` to what its queue needs."""

    startup_timeout = 60.0
    heartbeat_timeout = 6.0
    end_timeout = 30.0
    walltime_minutes = 0.05

    @pytest.fixture
    def pilot_description(self, pilot_env: PilotEnv) -> dict[str, Any]:
        return {"service_url": "example://localhost", "number_of_processes": 2,
                "working_directory": str(pilot_env.work)}

    @pytest.fixture
    def rejected_description(self, pilot_description: dict[str, Any]) -> tuple[dict[str, Any], str]:
        return {**pilot_description, "queue": "no-such-queue"}, "no queue 'no-such-queue'"

    def native_job_exists(self, native_id: str) -> bool:
        """The job is the session the agent leads (``<pid>:<start>@<host>``): it exists while
        any of its processes lives. Asked of ``ps``, as a batch system would be asked of
        ``qstat``, so the answer does not come from the adaptor under test."""
        sid = native_id.split(":", 1)[0]
        listing = subprocess.run(["ps", "-e", "-o", "sid=,stat="], capture_output=True, text=True,
                                 check=True, timeout=30).stdout
        return any(line.split()[0] == sid and not line.split()[1].startswith("Z")
                   for line in listing.splitlines() if line.strip())


def test_the_plugin_registers_the_scheme_and_can_be_blocked() -> None:
    """``pilot plugins`` lists it; ``PILOT_DISABLE_PLUGINS=example`` removes it."""
    assert PluginManager().adaptor_for("example").name == "example"
    assert "example" not in PluginManager(blocked={"example"}).adaptors
