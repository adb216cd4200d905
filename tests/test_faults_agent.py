"""Fault: an agent killed (kill -9) or frozen in the middle of a run, with the Redis store.

Units append their name to a shared log, so the test sees what really ran: no unit is lost, and
none that ended Done ran twice."""

from __future__ import annotations

import collections
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from pilot import ComputeDataService, PilotCompute, PilotComputeService, State
from pilot.testing import wait_for
from pilot.testing.fixtures import PilotEnv

pytestmark = pytest.mark.redis




def fork_pilot(pcs: PilotComputeService, env: PilotEnv, slots: int) -> PilotCompute:
    pilot = pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": slots,
                              "working_directory": str(env.work)})
    wait_for(lambda: pilot.get_state() == State.Running, 30, "the pilot to run")
    return pilot


def ran(log: Path) -> collections.Counter[str]:
    """How often each unit name was written to the log."""
    return collections.Counter(log.read_text().split()) if log.exists() else collections.Counter()


def logged(name: str, log: Path, then: str = "") -> dict[str, Any]:
    return {"executable": f"echo {name} >> {log}{then}", "name": name}


def test_killed_agent_fails_pilot_and_units_queued_units_move(pilot_env: PilotEnv, redis_store_url: str) -> None:
    """kill -9 of the agent: its pilot Failed with a reason, its running units Failed with that
    reason, its restartable unit run again, its queued units Done on the other pilot, and the
    units Done before the kill never run again."""
    pcs = PilotComputeService(redis_store_url, heartbeat_timeout=3)
    log = pilot_env.root / "ran.log"
    try:
        doomed = fork_pilot(pcs, pilot_env, slots=3)
        cds = ComputeDataService(coordination_url=redis_store_url)
        cds.add_pilot_compute_service(pcs)
        early = cds.submit_compute_units([logged(f"early{n}", log) for n in range(20)])
        wait_for(lambda: all(u.get_state() == State.Done for u in early), 60, "the early units")
        marker = pilot_env.root / "restarted"
        sleepers = cds.submit_compute_units([logged(f"sleeper{n}", log, "; sleep 3021") for n in range(2)])
        again = cds.submit_compute_unit({**logged("again", log, f"; test -e {marker} || {{ touch {marker}; "
                                                                 "sleep 3022; }"), "restartable": True})
        queued = cds.submit_compute_units([logged(f"queued{n}", log) for n in range(30)])
        wait_for(lambda: all(u.get_state() == State.Running for u in [*sleepers, again]), 30, "the sleepers")
        assert all(u.get_state() == State.Pending for u in queued)
        agent_pid = doomed._record()["agent_pid"]
        os.kill(agent_pid, signal.SIGKILL)
        wait_for(lambda: doomed.get_state() == State.Failed, 20, "the pilot to fail")
        reason = doomed.get_details()["reason"]
        assert reason
        for unit in sleepers:
            assert unit.get_state() == State.Failed
            assert unit.get_details()["reason"] == reason
        survivor = fork_pilot(pcs, pilot_env, slots=2)
        cds.wait(timeout=120)
        assert again.get_state() == State.Done
        assert again.get_details()["attempts"] == 1
        assert {u.get_state() for u in queued} == {State.Done}
        assert {u.get_details()["pilot"] for u in queued} == {survivor.get_url()}
        counts = ran(log)
        done = [u.get_details()["name"] for u in [*early, *queued]]
        assert [name for name in done if counts[name] != 1] == []
        assert counts["again"] == 2  # Failed with its pilot, then run again: Done once
        assert len(cds.list_compute_units()) == 20 + 2 + 1 + 30
    finally:
        pcs.cancel()


def test_frozen_agent_fails_after_the_heartbeat_timeout(pilot_env: PilotEnv, redis_store_url: str) -> None:
    """An agent that stops heartbeating (SIGSTOP) fails its pilot once the timeout passes."""
    pcs = PilotComputeService(redis_store_url, heartbeat_timeout=1.5)
    try:
        pilot = fork_pilot(pcs, pilot_env, slots=1)
        agent_pid = pilot._record()["agent_pid"]
        os.kill(agent_pid, signal.SIGSTOP)
        try:
            wait_for(lambda: pilot.get_state() == State.Failed, 30, "the pilot to fail")
        finally:
            try:
                os.kill(agent_pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        assert "heartbeat timeout" in pilot.get_details()["reason"]
    finally:
        pcs.cancel()
