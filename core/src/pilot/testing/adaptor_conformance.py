"""The conformance suite every resource adaptor must pass.

An adaptor's test module subclasses ``AdaptorConformance`` (under a name starting with
``Test``) and gives two fixtures and one method::

    class TestSgeConformance(AdaptorConformance):
        @pytest.fixture
        def pilot_description(self, pilot_env):
            return {"service_url": "sge://localhost", "number_of_processes": 2,
                    "working_directory": str(pilot_env.work)}

        @pytest.fixture
        def rejected_description(self, pilot_description):
            return {**pilot_description, "queue": "no-such-queue"}, "no-such-queue"

        def native_job_exists(self, native_id):
            return subprocess.run(["qstat", "-j", native_id], capture_output=True).returncode == 0

The tests drive the adaptor only through the public API (``PilotComputeService``,
``ComputeDataService``, ``get_details()``, reconnect by URL), the way users do: submit and reach
``Running``, run units, report the native id, cancel for real, a rejected submission, walltime,
an agent killed from outside, a silent agent, and reconnect and cancel from another process.

Class attributes a subclass may change: ``startup_timeout`` (seconds to reach ``Running``),
``heartbeat_timeout`` (seconds, set through ``PILOT_HEARTBEAT_TIMEOUT`` in the killed-agent
test), ``end_timeout`` (seconds for a batch job to leave the queue after its pilot ended) and
``walltime_minutes`` (the walltime of the walltime test: keep it as short as the agent and batch
system honour). ``kill_agent(record)`` kills the agent from outside (default: SIGKILL to the
pid the agent recorded, when it runs on this host); ``unit_process_exists(host, pid, marker)``
tells whether a unit's process still runs after cancel or a killed agent (default: /proc, when
the unit ran on this host; None, "cannot tell", elsewhere).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pilot import ComputeDataService, PilotCompute, PilotComputeService, State
from pilot.testing import wait_for

__all__ = ["AdaptorConformance"]

#: What the reconnecting process runs: reconnect by URL, report, cancel, report.
_RECONNECT_CHILD = textwrap.dedent("""
    import json, sys
    from pilot import PilotCompute
    pilot = PilotCompute(pilot_url=sys.argv[1])
    before = pilot.get_details()
    pilot.cancel()
    print(json.dumps({"state": str(before["state"]), "native_id": before["native_id"],
                      "after": str(pilot.get_state())}))
""")


def _output(unit: Any, name: str) -> str:
    """The text of file ``name`` in the unit's working directory ('' when there is none)."""
    path = Path(unit.get_local_working_directory() or "/nonexistent", name)
    return path.read_text() if path.exists() else ""


def _agent_pid(pilot_record: dict[str, Any]) -> int | None:
    """The agent's pid when it runs on this host and is still the agent of this pilot."""
    host, pid = pilot_record.get("agent_host"), pilot_record.get("agent_pid")
    if host != socket.gethostname() or not pid:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return int(pid) if str(pilot_record["id"]).encode() in cmdline else None


def _signal_agent(pilot_record: dict[str, Any], signum: int, method: str) -> None:
    pid = _agent_pid(pilot_record)
    if pid is None:
        pytest.fail(f"the agent of {pilot_record['id']} does not run here ({pilot_record.get('agent_host')!r}, "
                    f"pid {pilot_record.get('agent_pid')}): override {method} for this adaptor")
    os.kill(pid, signum)


class AdaptorConformance:
    """Behaviour every resource adaptor must show. Subclass it, give ``pilot_description``,
    ``rejected_description`` and ``native_job_exists``."""

    #: Seconds a pilot may take from ``create_pilot`` to ``Running`` (queue wait included).
    startup_timeout: float = 120.0
    #: The heartbeat timeout (seconds) of the killed-agent test.
    heartbeat_timeout: float = 10.0
    #: Seconds a batch job may take to leave the batch system after its pilot ended.
    end_timeout: float = 60.0
    #: The walltime of the walltime test, in minutes (0.1: the agent drains after about 6 s).
    walltime_minutes: float = 0.1

    @pytest.fixture(autouse=True)
    def _isolated(self, pilot_env: Any) -> Any:
        """Every test has its own store and work directory (``pilot_env``)."""
        return pilot_env

    # --- what a subclass gives -------------------------------------------------------------
    @pytest.fixture
    def pilot_description(self) -> dict[str, Any]:
        """A pilot description for the adaptor's scheme that its batch system accepts (2 slots
        is typical; working_directory under ``pilot_env.work``). Every subclass overrides it."""
        pytest.fail("override the pilot_description fixture in your AdaptorConformance subclass")

    @pytest.fixture
    def rejected_description(self) -> tuple[dict[str, Any], str]:
        """A description the batch system rejects, and a fragment of the batch system's own
        message that the failed pilot's reason must hold. Every subclass overrides it."""
        pytest.fail("override the rejected_description fixture in your AdaptorConformance subclass")

    def native_job_exists(self, native_id: str) -> bool:
        """True while the batch system still knows the job as queued or running."""
        raise NotImplementedError("override native_job_exists in your AdaptorConformance subclass")

    def kill_agent(self, pilot_record: dict[str, Any]) -> None:
        """Kill the pilot's agent from outside, as the OOM killer or an admin would: SIGKILL to
        the pid the agent recorded in the store. Override it where the agent runs elsewhere."""
        _signal_agent(pilot_record, signal.SIGKILL, "kill_agent")

    def freeze_agent(self, pilot_record: dict[str, Any]) -> None:
        """Make the agent silent without ending it, as a hung node would: SIGSTOP to the pid the
        agent recorded. Override it where the agent runs elsewhere (and end it afterwards)."""
        _signal_agent(pilot_record, signal.SIGSTOP, "freeze_agent")

    def unit_process_exists(self, host: str, pid: int, marker: str) -> bool | None:
        """Whether the process ``pid`` a unit started on ``host`` (its command line holds
        ``marker``) still runs; None where this test cannot tell. The default looks in /proc
        when ``host`` is this host; override it where units run on other hosts."""
        if host != socket.gethostname():
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            return False
        return marker.encode() in cmdline and state not in (b"Z", b"X")

    # --- helpers ---------------------------------------------------------------------------
    def sleeping_unit(self, pilot: PilotCompute, seconds: int) -> tuple[Any, str, int]:
        """Submit a unit that records its host and pid, then sleeps ``seconds``; wait until it
        runs. Returns the unit, its host and the pid of its sleep."""
        unit = pilot.submit_compute_unit({"executable": f'echo "$(hostname) $$" > unit.pid; exec /bin/sleep {seconds}'})
        wait_for(lambda: unit.get_state() == State.Running and _output(unit, "unit.pid").endswith("\n"),
                 self.startup_timeout, "the unit to run")
        host, pid = _output(unit, "unit.pid").split()
        return unit, host, int(pid)

    def wait_unit_process_gone(self, host: str, pid: int, seconds: int) -> None:
        """Wait until the unit's sleep no longer runs (where this test can tell)."""
        wait_for(lambda: not self.unit_process_exists(host, pid, f"sleep {seconds}"), self.end_timeout,
                 f"the unit's process {pid} on {host} to end")

    def start_pilot(self, description: dict[str, Any], pcs: PilotComputeService | None = None) -> PilotCompute:
        """Create a pilot from ``description`` and wait until it is ``Running``."""
        pilot = (pcs or PilotComputeService()).create_pilot(description)
        state = wait_for(lambda: (s := pilot.get_state()) not in (State.New, State.Pending) and s,
                         self.startup_timeout, f"pilot {pilot.id} to start")
        assert state == State.Running, f"pilot {pilot.id} is {state}: {pilot.get_details()['reason']}"
        return pilot

    def wait_native_gone(self, native_id: str) -> None:
        """Wait until the batch system no longer knows ``native_id``."""
        wait_for(lambda: not self.native_job_exists(native_id), self.end_timeout,
                 f"batch job {native_id} to leave the batch system")

    @staticmethod
    def wait_final(pilot: PilotCompute, timeout: float) -> State:
        """Wait until ``pilot`` is final; return its state."""
        state: State = wait_for(lambda: (s := pilot.get_state()).is_final and s, timeout, f"pilot {pilot.id} to end")
        return state

    # --- the tests -------------------------------------------------------------------------
    def test_submit_reaches_running_and_reports_the_native_id(self, pilot_description: dict[str, Any]) -> None:
        """The pilot reaches Running with its slots; get_details() names the batch job, which
        the batch system knows while the pilot runs."""
        pilot = self.start_pilot(pilot_description)
        details = pilot.get_details()
        native_id = details["native_id"]
        assert isinstance(native_id, str), details
        assert native_id, details
        assert self.native_job_exists(native_id), f"batch job {native_id} unknown while its pilot runs"
        assert details["slots"] == pilot_description.get("number_of_processes", 1)
        assert details["hosts"], details
        assert details["submitted"], details
        assert details["started"], details
        assert details["service_url"] == pilot_description["service_url"]
        pilot.cancel()

    def test_units_run_with_outputs_and_exit_codes(self, pilot_description: dict[str, Any]) -> None:
        """Units run on the pilot: output and error files in their sandboxes, the environment
        exported, exit code 0 Done, any other exit code Failed with that code."""
        pcs = PilotComputeService()
        pilot = self.start_pilot(pilot_description, pcs)
        cds = ComputeDataService()
        cds.add_pilot_compute_service(pcs)
        ok, failed, quoted = cds.submit_compute_units([
            {"executable": "/bin/echo", "arguments": ["hello", "$GREETING"], "environment": {"GREETING": "world"},
             "output": "out.txt"},
            {"executable": "echo oops >&2; exit 3"},
            {"executable": "/bin/sh", "arguments": ["-c", "'echo \"$0\"'", "'two words'"]},
        ])
        cds.wait(timeout=self.startup_timeout)
        assert ok.get_state() == State.Done, ok.get_details()["reason"]
        assert ok.get_exit_code() == 0
        assert _output(ok, "out.txt") == "hello world\n"
        assert failed.get_state() == State.Failed
        assert failed.get_exit_code() == 3
        assert failed.get_details()["reason"]
        assert _output(failed, "stderr.txt") == "oops\n"
        assert quoted.get_state() == State.Done, quoted.get_details()["reason"]
        assert _output(quoted, "stdout.txt") == "two words\n"
        for unit in (ok, failed, quoted):
            assert unit.get_details()["pilot"] == pilot.get_url()
            assert unit.get_details()["host"] in pilot.get_details()["hosts"]
        pilot.cancel()

    def test_cancel_ends_the_batch_job(self, pilot_description: dict[str, Any]) -> None:
        """cancel() ends the pilot Canceled, its running unit Canceled; the batch job and the
        unit's process go."""
        pilot = self.start_pilot(pilot_description)
        unit, host, pid = self.sleeping_unit(pilot, 3271)
        native_id = pilot.get_details()["native_id"]
        assert self.native_job_exists(native_id)
        pilot.cancel()
        assert pilot.get_state() == State.Canceled
        assert unit.get_state() == State.Canceled
        self.wait_native_gone(native_id)
        self.wait_unit_process_gone(host, pid, 3271)
        assert pilot.get_state() == State.Canceled  # final states never change

    def test_cancel_right_after_submission(self, pilot_description: dict[str, Any]) -> None:
        """A pilot canceled as soon as create_pilot returns (queued, or its agent still
        starting) ends Canceled, stays so, and its batch job goes."""
        pilot = PilotComputeService().create_pilot(pilot_description)
        native_id = pilot.get_details()["native_id"]
        assert native_id, pilot.get_details()["reason"]
        pilot.cancel()
        assert pilot.get_state() == State.Canceled
        self.wait_native_gone(native_id)
        assert pilot.get_state() == State.Canceled

    def test_cancel_ends_only_its_own_pilot(self, pilot_description: dict[str, Any]) -> None:
        """Of two pilots of one service, cancel ends the one canceled; the other keeps running
        its units."""
        pcs = PilotComputeService()
        first = pcs.create_pilot(pilot_description)
        second = self.start_pilot(pilot_description, pcs)
        wait_for(lambda: first.get_state() != State.Pending, self.startup_timeout, "the first pilot to start")
        assert first.get_state() == State.Running, first.get_details()["reason"]
        first_id, second_id = first.get_details()["native_id"], second.get_details()["native_id"]
        assert first_id != second_id
        first.cancel()
        self.wait_native_gone(first_id)
        assert second.get_state() == State.Running, second.get_details()["reason"]
        assert self.native_job_exists(second_id)
        unit = second.submit_compute_unit({"executable": "/bin/true"})
        assert unit.wait(timeout=self.startup_timeout) == State.Done, unit.get_details()["reason"]
        second.cancel()

    def test_rejected_submission_fails_with_the_batch_systems_message(
            self, rejected_description: tuple[dict[str, Any], str]) -> None:
        """A description the batch system refuses fails the pilot, the refusal in its reason."""
        description, fragment = rejected_description
        pilot = PilotComputeService().create_pilot(description)
        state = self.wait_final(pilot, self.startup_timeout)
        reason = pilot.get_details()["reason"]
        assert state == State.Failed, reason
        assert fragment in (reason or ""), f"{fragment!r} not in the reason {reason!r}"

    def test_walltime_ends_the_pilot_done(self, pilot_description: dict[str, Any]) -> None:
        """At its walltime the pilot drains and ends Done (its running unit Failed with the
        reason), and its batch job ends."""
        pilot = self.start_pilot({**pilot_description, "walltime": self.walltime_minutes})
        unit = pilot.submit_compute_unit({"executable": "/bin/sleep", "arguments": ["3272"]})
        native_id = pilot.get_details()["native_id"]
        wait_for(lambda: unit.get_state() != State.Pending, self.walltime_minutes * 60, "the unit to start")
        state = self.wait_final(pilot, self.walltime_minutes * 60 + self.startup_timeout)
        assert state == State.Done, pilot.get_details()["reason"]
        assert "walltime" in (pilot.get_details()["reason"] or "")
        assert unit.get_state() == State.Failed
        assert unit.get_details()["reason"] == "pilot walltime reached"
        self.wait_native_gone(native_id)

    def test_agent_killed_from_outside_fails_the_pilot(self, pilot_description: dict[str, Any],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
        """An agent killed from outside fails its pilot within the heartbeat timeout, with a
        reason; its running unit fails with the same reason; neither the batch job nor the
        unit's process is left behind."""
        monkeypatch.setenv("PILOT_HEARTBEAT_TIMEOUT", f"{self.heartbeat_timeout:g}")
        pcs = PilotComputeService()
        assert pcs.heartbeat_timeout == self.heartbeat_timeout
        pilot = self.start_pilot(pilot_description, pcs)
        unit, host, pid = self.sleeping_unit(pilot, 3273)
        native_id = pilot.get_details()["native_id"]
        self.kill_agent(pilot._record())
        # the bound: the heartbeat timeout, plus the time the client's polls may take on a loaded host
        state = self.wait_final(pilot, self.heartbeat_timeout + max(5.0, self.heartbeat_timeout / 2))
        assert state == State.Failed
        reason = pilot.get_details()["reason"]
        assert reason
        assert unit.get_state() == State.Failed
        assert unit.get_details()["reason"] == reason
        self.wait_native_gone(native_id)
        self.wait_unit_process_gone(host, pid, 3273)

    def test_silent_agent_fails_the_pilot_after_the_heartbeat_timeout(
            self, pilot_description: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
        """An agent that stops heartbeating while its batch job runs (a hung node) fails its
        pilot after the heartbeat timeout, saying so; its batch job is canceled and its unit's
        process ends."""
        monkeypatch.setenv("PILOT_HEARTBEAT_TIMEOUT", f"{self.heartbeat_timeout:g}")
        pilot = self.start_pilot(pilot_description, PilotComputeService())
        unit, host, pid = self.sleeping_unit(pilot, 3274)
        native_id, record = pilot.get_details()["native_id"], pilot._record()
        self.freeze_agent(record)
        try:
            state = self.wait_final(pilot, self.heartbeat_timeout + max(5.0, self.heartbeat_timeout / 2))
            reason = pilot.get_details()["reason"] or ""
            assert state == State.Failed, reason
            assert "heartbeat timeout" in reason
            assert unit.get_state() == State.Failed
            self.wait_native_gone(native_id)
            self.wait_unit_process_gone(host, pid, 3274)
        finally:
            frozen = _agent_pid(record)
            if frozen is not None:  # never leave a stopped agent behind, whatever the verdict
                os.kill(frozen, signal.SIGKILL)

    def test_reconnect_and_cancel_from_another_process(self, pilot_description: dict[str, Any],
                                                       tmp_path: Path) -> None:
        """Another process holding only the pilot's URL sees it Running and cancels it: the
        pilot is Canceled here too, and the batch job is gone."""
        pilot = self.start_pilot(pilot_description)
        native_id = pilot.get_details()["native_id"]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if isinstance(p, str) and p)
        result = subprocess.run([sys.executable, "-c", _RECONNECT_CHILD, pilot.get_url()], capture_output=True,
                                text=True, timeout=self.end_timeout + 60, cwd=tmp_path, env=env, check=False)
        assert result.returncode == 0, result.stderr
        seen = json.loads(result.stdout.strip().splitlines()[-1])
        assert seen == {"state": "Running", "native_id": native_id, "after": "Canceled"}, result.stderr
        assert pilot.get_state() == State.Canceled
        self.wait_native_gone(native_id)
