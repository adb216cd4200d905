"""Fault: a unit whose sandbox cannot be written. The path lies under a regular file, so creating
it fails even for root (ENOTDIR); that unit ends Failed with the reason, the others are Done."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pilot import ComputeDataService, PilotComputeService, State
from pilot.testing.fixtures import PilotEnv

pytestmark = pytest.mark.redis


def test_unwritable_sandbox_fails_only_that_unit(pilot_env: PilotEnv, redis_store_url: str,
                                                 redis_password: str) -> None:
    blocker = pilot_env.root / "a-file"
    blocker.write_text("not a directory\n")
    pcs = PilotComputeService(redis_store_url)
    try:
        pilot = pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 2,
                                  "working_directory": str(pilot_env.work)})
        cds = ComputeDataService(coordination_url=redis_store_url)
        cds.add_pilot_compute_service(pcs)
        good = cds.submit_compute_units([{"executable": "/bin/echo", "arguments": [str(n)]} for n in range(6)])
        bad = cds.submit_compute_unit({"executable": "/bin/echo", "arguments": ["never"],
                                       "working_directory": str(blocker / "sandbox")})
        more = cds.submit_compute_units([{"executable": "/bin/echo", "arguments": [str(n)]} for n in range(6)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and pilot.get_state() in (State.New, State.Pending):
            time.sleep(0.05)
        cds.wait(timeout=60)
        assert bad.get_state() == State.Failed
        reason = bad.get_details()["reason"]
        assert "cannot prepare sandbox" in reason and "Not a directory" in reason
        assert [u.get_state() for u in good + more] == [State.Done] * 12
        assert pilot.get_state() == State.Running
        agent_log = Path(pilot.get_details()["sandbox"]) / "agent.log"
        assert agent_log.read_text() and redis_password not in agent_log.read_text()
        assert redis_password not in pilot.get_url() and redis_password not in bad.get_url()
    finally:
        pcs.cancel()
