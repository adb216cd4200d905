"""Fault: the agent's Redis store gone (issue 11, "Losing work"). The agent keeps its units
running through a short outage and resumes; after its loss timeout (``PILOT_STORE_LOSS_TIMEOUT``)
it stops its units and exits; ``SIGTERM`` ends it within 5 s whatever the store does; a record the
store cannot encode never holds the others. Each test runs its own redis-server (see
``test_faults_redis_outage``)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
import test_faults_redis_outage as outage
from test_faults_redis_outage import PrivateRedis

from pilot import PilotComputeService, State
from pilot.compute import unit_records
from pilot.testing import wait_for
from pilot.testing.fixtures import PilotEnv

pytestmark = pytest.mark.redis
private_redis = outage.private_redis  # the fixture: a redis-server of the test's own


def _pids(needle: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle.encode() in cmdline and state != "Z":
            found.append(int(entry))
    return found


def _pilot(env: PilotEnv, server: PrivateRedis, monkeypatch: pytest.MonkeyPatch,
           **environment: str) -> tuple[PilotComputeService, Any, str]:
    monkeypatch.setenv("PILOT_REDIS_CREDENTIALS", str(env.root / "redis-passwords"))
    url = f"redis://:{server.password}@127.0.0.1:{server.port}/0"
    pcs = PilotComputeService(url)
    pilot = pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 2,
                              "working_directory": str(env.work), "environment": environment})
    wait_for(lambda: pilot.get_state() == State.Running, 30, "the pilot to run")
    return pcs, pilot, url


def test_agent_rides_out_a_short_outage_and_gives_up_after_its_loss_timeout(
        pilot_env: PilotEnv, private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    pcs, pilot, _ = _pilot(pilot_env, private_redis, monkeypatch,
                           PILOT_STORE_LOSS_TIMEOUT="6", PILOT_REDIS_RETRY_SECONDS="1")
    marker = f"loss-{pilot.id[-8:]}"
    unit = pilot.submit_compute_unit({"executable": "/bin/sh", "arguments": ["-c", f"'sleep 287 # {marker}'"]})
    wait_for(lambda: unit.get_state() == State.Running, 30, "the unit to run")
    agent = _pids(f"--pilot {pilot.id}")
    assert agent and _pids(marker)
    private_redis.stop()
    time.sleep(3)  # shorter than the loss timeout: nothing stops
    private_redis.start()
    quick = pilot.submit_compute_unit({"executable": "/bin/true"})
    assert quick.wait(timeout=30) == State.Done  # resumed
    assert _pids(marker) and _pids(f"--pilot {pilot.id}")
    assert unit.get_state() == State.Running
    private_redis.stop()
    lost = time.monotonic()
    wait_for(lambda: not _pids(f"--pilot {pilot.id}"), 30, "the agent to give up")
    assert time.monotonic() - lost < 20
    assert not _pids(marker), "a unit outlived its agent"
    log = (pilot_env.work / pilot.id / "agent.log").read_text()
    assert "coordination store unreachable" in log
    assert log.count("failed; the agent keeps its units running") == 2  # once per outage
    private_redis.start()
    pcs.cancel()


def test_sigterm_ends_an_agent_whose_redis_is_gone_within_five_seconds(
        pilot_env: PilotEnv, private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    pcs, pilot, _ = _pilot(pilot_env, private_redis, monkeypatch)  # the default: retries for 60 s
    marker = f"sigterm-{pilot.id[-8:]}"
    unit = pilot.submit_compute_unit({"executable": "/bin/sh", "arguments": ["-c", f"'sleep 287 # {marker}'"]})
    wait_for(lambda: unit.get_state() == State.Running, 30, "the unit to run")
    (agent,) = _pids(f"--pilot {pilot.id}")
    private_redis.stop()
    time.sleep(2)  # the agent's store calls are retrying now
    os.kill(agent, signal.SIGTERM)
    sent = time.monotonic()
    wait_for(lambda: not _pids(f"--pilot {pilot.id}"), 15, "the agent to exit")
    assert time.monotonic() - sent < 5.5
    assert not _pids(marker), "a unit outlived its agent"
    private_redis.start()
    pcs.cancel()


def test_an_unencodable_unit_does_not_hold_the_pilot_on_redis(
        pilot_env: PilotEnv, private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    pcs, pilot, _ = _pilot(pilot_env, private_redis, monkeypatch)
    records = unit_records([{"executable": "/bin/true"}] * 3, pilot_id=pilot.id)
    records[1]["description"]["working_directory"] = "dir-\udcff"
    pilot._store.insert_units(records)
    ids = [r["id"] for r in records]

    def settled() -> list[dict[str, Any]] | None:
        found = pilot._store.get_units(ids)
        return found if all(State(u["state"]).is_final for u in found) else None

    units = {u["id"]: u for u in wait_for(settled, 30, "every unit to end")}
    assert [units[i]["state"] for i in ids] == [State.Done] * 3
    assert units[ids[1]]["sandbox"].endswith("dir-\\xff")
    pcs.cancel()
