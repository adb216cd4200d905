"""Multi-node pbs:// and lsf:// pilots through FAKE batch commands (``pilot.testing.fake_batch``):
the fake job gets three node names (``FAKE_BATCH_NODES``; all are this machine) and the fake
``pbsdsh``/``blaunch`` start tasks "on" them as the real ones do (pbsdsh: the job's original
environment, the home directory, no stdin, stdout to the job's output; blaunch: the caller's
environment and stdio), marking each task with ``FAKE_BATCH_HOST``. No real PBS or LSF is
involved: this checks that the agent starts one node executor per other node through them, that
units and their environment reach those nodes, and what happens when an executor dies."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pilot import PilotComputeService, State
from pilot.testing import fake_batch, wait_for
from pilot.testing.fixtures import PilotEnv

NODES = ("fake-node-2", "fake-node-3")
EXECUTOR = "pilot.agent.executor"
# where the unit ran, what environment it got, and its parent's command line
WHERE = ('echo "host=$FAKE_BATCH_HOST"; echo "env=$FOO/$BAR"; echo "secret=${PILOT_TEST_PASSWORD:-}"; echo "pid=$$"; '
         "echo \"parent=$(tr '\\0' ' ' </proc/$PPID/cmdline)\"")


@pytest.fixture
def fake(pilot_env: PilotEnv, monkeypatch: pytest.MonkeyPatch) -> Path:
    """FAKE batch commands first on PATH, jobs spread over this host and two more node names."""
    state = pilot_env.root / "fake-batch"
    bin_dir = fake_batch.install(pilot_env.root / "fake-bin", state)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    monkeypatch.setenv("PILOT_PSIJ_POLL_INTERVAL", "0.2")
    monkeypatch.setenv("FAKE_BATCH_NODES", ",".join(NODES))
    return state


def start(pilot_env: PilotEnv, scheme: str, slots: int) -> Any:
    pilot = PilotComputeService().create_pilot({
        "service_url": f"{scheme}://localhost", "number_of_processes": slots, "walltime": 10,
        "environment": {"FOO": "from-pilot", "PILOT_TEST_PASSWORD": "agent-only"},
        "working_directory": str(pilot_env.work)})
    state = wait_for(lambda: (s := pilot.get_state()) != State.Pending and s, 60, "the pilot to start")
    assert state == State.Running, pilot.get_details()["reason"]
    assert sorted(pilot.get_details()["hosts"]) == sorted([socket.gethostname(), *NODES])
    return pilot


def report(unit: Any) -> dict[str, str]:
    """The WHERE lines of ``unit`` as a dict ({} before it wrote them)."""
    path = Path(unit.get_local_working_directory() or "/nonexistent") / "stdout.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return dict(line.split("=", 1) for line in lines if "=" in line)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize("scheme", ["pbs", "lsf"])
def test_units_reach_every_node_through_executors_with_their_environment(pilot_env: PilotEnv, fake: Path,
                                                                         scheme: str) -> None:
    """Units run on all three nodes; on the other two as children of that node's executor, with
    the pilot's and the unit's environment (pbsdsh passes neither on by itself), less the
    agent's own secrets (``PILOT_*PASSWORD*``)."""
    pilot = start(pilot_env, scheme, 3)
    try:
        units = [pilot.submit_compute_unit({"executable": f"{WHERE}; sleep 0.2",
                                            "environment": {"BAR": "from unit"}}) for _ in range(12)]
        for unit in units:
            assert unit.wait(timeout=60) == State.Done, unit.get_details()["reason"]
        seen: dict[str, set[str]] = {}
        for unit in units:
            got = report(unit)
            host = got["host"] or socket.gethostname()
            assert unit.get_details()["host"] == host
            assert got["env"] == "from-pilot/from unit"
            if host in NODES:  # the agent's own secrets do not travel to executors
                assert got["secret"] == ""
            seen.setdefault(host, set()).add("executor" if EXECUTOR in got["parent"] else got["parent"])
        assert set(seen) == {socket.gethostname(), *NODES}
        for node in NODES:
            assert seen[node] == {"executor"}
    finally:
        pilot.cancel()


@pytest.mark.parametrize("scheme", ["pbs", "lsf"])
def test_a_killed_executor_fails_its_unit_and_is_restarted_then_given_up(
        pilot_env: PilotEnv, fake: Path, scheme: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 of a node executor: its running unit fails with the reason (its process killed),
    the node's slot comes back and its next unit runs in a new executor; once the restarts
    (here one) are used up, the node's units start through the per-unit launcher."""
    monkeypatch.setenv("PILOT_NODE_EXECUTOR_RESTARTS", "1")
    pilot = start(pilot_env, scheme, 3)
    pids: list[int] = []
    try:
        busy = [pilot.submit_compute_unit({"executable": f"{WHERE}; exec sleep 287"}) for _ in range(3)]
        wait_for(lambda: all(len(report(u)) == 5 for u in busy), 60, "the units to run")
        pids = [int(report(u)["pid"]) for u in busy]
        victim = next(u for u in busy if report(u)["host"] == NODES[0])
        others = [u for u in busy if u is not victim]
        executor_pid = parent_of(int(report(victim)["pid"]))
        for round_number in (1, 2):
            os.kill(executor_pid, signal.SIGKILL)
            assert victim.wait(timeout=60) == State.Failed
            assert victim.get_details()["reason"].startswith(f"node executor on {NODES[0]} lost:")
            assert not alive(int(report(victim)["pid"]))  # killed before the unit was called Failed
            assert all(u.get_state() == State.Running for u in others)
            victim = pilot.submit_compute_unit({"executable": f"{WHERE}; exec sleep 287"})  # only that slot is free
            wait_for(lambda unit=victim: len(report(unit)) == 5, 60, "the next unit on the node")
            pids.append(int(report(victim)["pid"]))
            assert report(victim)["host"] == NODES[0]
            if round_number == 1:
                assert EXECUTOR in report(victim)["parent"]
                assert report(victim)["env"] == "from-pilot/"
                assert parent_of(int(report(victim)["pid"])) != executor_pid
                executor_pid = parent_of(int(report(victim)["pid"]))
            else:
                assert EXECUTOR not in report(victim)["parent"]
                assert f"fake_batch {'pbsdsh' if scheme == 'pbs' else 'blaunch'}" in report(victim)["parent"]
    finally:
        pilot.cancel()
        for pid in pids:  # nothing may be left should an assertion fail
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_connecting_executor_must_show_the_token(tmp_path: Path) -> None:
    """An executor started through a launcher that passes no stdio (pbsdsh) connects back with
    the token from a 0600 file of the sandbox: a connection without it is dropped, the real one
    is served, and the token file is gone once it connected. (The launcher here is a script
    that makes a stranger's connection first and then runs the executor on this host.)"""
    from pilot.agent.remote import NodeExecutor

    stranger = ("import socket, sys; host, port = sys.argv[1].rsplit(':', 1); "
                "s = socket.create_connection((host, int(port))); s.sendall(b'not-the-token\\n'); "
                "s.recv(1)")  # EOF: the agent hung up on it
    seen: dict[str, int] = {}

    def on_node(argv: list[str]) -> list[str]:
        address, token_file = argv[argv.index("--connect") + 1], argv[argv.index("--token-file") + 1]
        seen["mode"] = os.stat(token_file).st_mode & 0o777
        script = f"{sys.executable} -c \"{stranger}\" {address} && exec \"$@\""
        return ["/bin/sh", "-c", script, "sh", *argv]

    executor = NodeExecutor("fake-node", on_node, stdio=False, token_dir=str(tmp_path))
    try:
        assert executor.usable(60), executor.lost
        assert seen["mode"] == 0o600
        assert not list(tmp_path.glob(".pilot-executor-*"))
        unit = executor.start("u1", {"executable": "echo $PILOT_TEST_MARK"}, str(tmp_path / "u1"))
        assert unit is not None
        unit.wait_started()
        assert unit.wait() == 0
        assert (tmp_path / "u1" / "stdout.txt").read_text() == os.environ.get("PILOT_TEST_MARK", "") + "\n"
    finally:
        executor.close()
        executor.finish(time.monotonic() + 10)
