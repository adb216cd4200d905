"""The agent against bad records, lost or locked stores, stuck input data and signals (issue 11,
"Losing work"): fork pilots on the embedded store, units inserted straight into the store where
validation would refuse them (an older client, another tool)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pilot import PilotComputeService, PilotDataService, State
from pilot.compute import unit_records
from pilot.plugin import hookimpl
from pilot.plugin.manager import PluginManager
from pilot.plugin.types import NativeStatus, PilotJobRequest, ResourceAdaptorRecord
from pilot.session import Session
from pilot.testing.fixtures import PilotEnv

from helpers import fork_pilot, pids_matching, wait_for


def _agent_log(pilot: Any) -> Path:
    return Path(pilot._record()["sandbox"], "agent.log")


def test_a_unit_with_an_undecodable_path_does_not_hold_the_others(pilot_env: PilotEnv) -> None:
    pcs = PilotComputeService()
    pilot = fork_pilot(pcs, slots=1)
    records = unit_records([{"executable": "/bin/true"}] * 4, pilot_id=pilot.id)
    records[1]["description"]["working_directory"] = "dir-\udcff"  # what Python gives for b"dir-\xff"
    records[2]["description"]["input"] = "in-\udcfe.txt"            # no such file: the reason names it
    pilot._store.insert_units(records)
    ids = [r["id"] for r in records]
    store = pilot._store

    def settled() -> list[dict[str, Any]] | None:
        found = store.get_units(ids)
        return found if all(State(u["state"]).is_final for u in found) else None

    units = {u["id"]: u for u in wait_for(settled, 20, "every unit to end")}
    assert [units[i]["state"] for i in ids] == [State.Done, State.Done, State.Failed, State.Done]
    assert units[ids[1]]["sandbox"].endswith("dir-\\xff")  # the name on disk, readable
    assert os.path.isdir(os.fsencode(pilot._record()["sandbox"]) + b"/dir-\xff")
    assert "in-\\xfe.txt" in units[ids[2]]["reason"]
    time.sleep(0.5)
    assert _agent_log(pilot).stat().st_size < 20_000, "the agent logs a failing write over and over"
    pcs.cancel()


def _forced_pending_du(tmp_path: Path) -> Any:
    (tmp_path / "f").write_text("f")
    pd = PilotDataService().create_pilot({"service_url": str(tmp_path / "pd")})
    du = pd.submit_data_unit({"file_urls": [str(tmp_path / "f")]})
    du.wait(timeout=30)
    du._store.update_service(du.id, {"state": State.Pending})  # as if its upload never ended
    return du


def test_a_unit_waiting_for_its_input_data_can_be_canceled(tmp_path: Path) -> None:
    du = _forced_pending_du(tmp_path)
    pcs = PilotComputeService()
    pilot = fork_pilot(pcs, slots=1)
    stuck = pilot.submit_compute_unit({"executable": "/bin/true", "input_data": [du.get_url()]})
    wait_for(lambda: stuck.get_state() == State.Staging, 20, "the unit to stage in")
    after = pilot.submit_compute_unit({"executable": "/bin/true"})
    started = time.monotonic()
    stuck.cancel()
    assert stuck.wait(timeout=10) == State.Canceled
    assert time.monotonic() - started < 3
    assert after.wait(timeout=10) == State.Done  # the slot was given back
    pcs.cancel()


def test_a_unit_whose_input_data_fails_while_it_waits_fails_with_the_reason(tmp_path: Path) -> None:
    du = _forced_pending_du(tmp_path)
    pcs = PilotComputeService()
    pilot = fork_pilot(pcs, slots=1)
    unit = pilot.submit_compute_unit({"executable": "/bin/true", "input_data": [du.get_url()]})
    wait_for(lambda: unit.get_state() == State.Staging, 20, "the unit to stage in")
    du._store.update_service(du.id, {"state": State.Failed, "reason": "upload broke"})
    assert unit.wait(timeout=10) == State.Failed
    assert "upload broke" in unit.get_details()["reason"]
    pcs.cancel()


def test_a_draining_agent_does_not_wait_for_input_data(tmp_path: Path) -> None:
    du = _forced_pending_du(tmp_path)
    pcs = PilotComputeService()
    pilot = fork_pilot(pcs, slots=1)
    unit = pilot.submit_compute_unit({"executable": "/bin/true", "input_data": [du.get_url()]})
    wait_for(lambda: unit.get_state() == State.Staging, 20, "the unit to stage in")
    agent_pid = int(pilot._record()["agent_pid"])
    os.kill(agent_pid, signal.SIGTERM)
    wait_for(lambda: not pids_matching(pilot.id), 5, "the agent to exit")
    assert unit.get_state() == State.Failed
    assert pilot.get_state() == State.Failed
    assert "SIGTERM" in pilot.get_details()["reason"]


def test_sigterm_ends_an_agent_whose_store_is_locked(pilot_env: PilotEnv) -> None:
    pcs = PilotComputeService()
    pilot = fork_pilot(pcs, slots=2)
    marker = f"hardening-{pilot.id[-8:]}"
    unit = pilot.submit_compute_unit({"executable": "/bin/sh", "arguments": ["-c", f"'sleep 287 # {marker}'"]})
    short = pilot.submit_compute_unit({"executable": "sleep", "arguments": ["1"]})
    wait_for(lambda: unit.get_state() == short.get_state() == State.Running, 20, "the units to run")
    agent_pid = int(pilot._record()["agent_pid"])
    lock = sqlite3.connect(pcs._store.path, isolation_level=None, timeout=30)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # every write of the agent now waits (30 s, then retries)
        time.sleep(2)  # the short unit ended: the agent's loop is stuck writing that
        os.kill(agent_pid, signal.SIGTERM)
        started = time.monotonic()
        wait_for(lambda: not pids_matching(pilot.id), 10, "the agent to exit")
        assert time.monotonic() - started < 5.5
        assert not pids_matching(marker), "the unit outlived its agent"
    finally:
        lock.execute("ROLLBACK")
        lock.close()


class _SlowAdaptor:
    """An adaptor whose submit blocks until the test lets it go; records cancels."""

    def __init__(self) -> None:
        self.submitting = threading.Event()
        self.release = threading.Event()
        self.canceled: list[str] = []

    def submit(self, request: PilotJobRequest) -> str:
        self.submitting.set()
        assert self.release.wait(30)
        return f"job-{request.pilot_id}"

    def status(self, native_id: str) -> NativeStatus:
        return NativeStatus(State.Canceled if native_id in self.canceled else State.Pending)

    def cancel(self, native_id: str) -> None:
        self.canceled.append(native_id)


class _SlowPlugin:
    def __init__(self) -> None:
        self.adaptor = _SlowAdaptor()

    @hookimpl
    def pilot_resource_adaptors(self) -> list[ResourceAdaptorRecord]:
        return [ResourceAdaptorRecord(name="slow", schemes=("slow",), factory=lambda _url: self.adaptor)]


def test_cancel_during_submission_keeps_the_job_id_and_cancels_the_job(pilot_env: PilotEnv) -> None:
    plugin = _SlowPlugin()
    session = Session(PluginManager(extra_plugins={"slow": plugin}))
    try:
        pcs = PilotComputeService(session=session)
        made: list[Any] = []
        thread = threading.Thread(target=lambda: made.append(pcs.create_pilot({"service_url": "slow://x"})))
        thread.start()
        assert plugin.adaptor.submitting.wait(10)
        (record,) = pcs._store.pilots_of([pcs.id])
        from pilot.compute import PilotCompute

        PilotCompute(session=session, _store=pcs._store, _id=record["id"]).cancel()
        plugin.adaptor.release.set()
        thread.join(30)
        (pilot,) = made
        native_id = f"job-{pilot.id}"
        assert pilot._record()["native_id"] == native_id
        assert pilot.get_state() == State.Canceled
        assert native_id in plugin.adaptor.canceled
    finally:
        session.close()


_HANGING_DRAIN = """
import os, subprocess, sys, threading, time, types
from pilot.agent.runner import Agent
from pilot.log import get_logger

unit = subprocess.Popen(["sleep", "60"])  # a unit in the agent's session
signal_r, signal_w = os.pipe()
agent = types.SimpleNamespace(signal_r=signal_r, wake_w=os.open(os.devnull, os.O_WRONLY), signal_at=None,
                              workers=types.SimpleNamespace(running={}), log=get_logger(),
                              workers_halted=lambda: None)
threading.Thread(target=Agent._watchdog, args=(agent,), daemon=True).start()
print(unit.pid, flush=True)
os.write(signal_w, b"\\x0f")  # SIGTERM came (what the C handler writes to the wakeup fd)
time.sleep(60)  # ... and the drain hangs
"""


def test_the_watchdog_ends_a_signaled_agent_whose_drain_hangs_within_five_seconds() -> None:
    """The agent's watchdog thread on its own (the drain stands in as a sleep): it kills the
    units of the agent's session and exits 143 within the 5 s the site-admin guide promises."""
    agent = subprocess.Popen([sys.executable, "-c", _HANGING_DRAIN], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    unit_pid = int(agent.stdout.readline())  # type: ignore[union-attr]
    signaled = time.monotonic()
    assert agent.wait(timeout=30) == 128 + signal.SIGTERM
    assert time.monotonic() - signaled < 5.5
    wait_for(lambda: _gone(unit_pid), 5, "the unit to be killed")
    out, err = agent.communicate()
    assert "killed its units" in out + err


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
