"""The native spawner (``pilot.agent.native``): its build, its request/event protocol, and the
plain units a fork pilot runs through it, observed as a user would (files, states, reasons)."""

from __future__ import annotations

import concurrent.futures
import os
import select
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilot import ComputeDataService, PilotComputeService, State
from pilot.agent import native
from pilot.testing import wait_for

from helpers import fork_pilot

pytestmark = pytest.mark.skipif(not native.enabled(), reason="PILOT_NATIVE_SPAWNER turns the native spawner off")


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A spawner built for these tests (the machine's C compiler)."""
    try:
        return native.spawner_binary(tmp_path_factory.mktemp("spawner-build"))
    except native.SpawnerUnavailable as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"the native spawner cannot be built here: {exc}")


# --- the build -------------------------------------------------------------------------------
def test_a_build_is_made_once_private_to_its_owner_and_reused(tmp_path: Path, binary: str) -> None:
    cache = tmp_path / "cache"
    first = native.spawner_binary(cache)
    mode = stat.S_IMODE(os.stat(first).st_mode)
    assert mode == 0o700
    assert Path(first).parent == cache and "spawner-" in Path(first).name
    made = os.stat(first).st_mtime_ns
    assert native.spawner_binary(cache) == first
    assert os.stat(first).st_mtime_ns == made  # not built again
    assert [p.name for p in cache.iterdir()] == [Path(first).name]  # no build leftovers


def test_a_build_others_may_write_is_not_trusted_and_is_rebuilt(tmp_path: Path, binary: str) -> None:
    first = native.spawner_binary(tmp_path)
    os.chmod(first, 0o772)
    again = native.spawner_binary(tmp_path)
    assert again == first and stat.S_IMODE(os.stat(again).st_mode) == 0o700


def test_agents_starting_at_once_build_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binary: str) -> None:
    calls = tmp_path / "calls"
    wrapper = tmp_path / "counting-cc"
    wrapper.write_text(f'#!/bin/sh\necho built >> {calls}\nexec cc "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("CC", str(wrapper))
    cache = tmp_path / "cache"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        paths = set(pool.map(lambda _: native.spawner_binary(cache), range(4)))
    assert len(paths) == 1 and calls.read_text() == "built\n"


def test_without_a_compiler_it_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(native.SpawnerUnavailable, match="no-such-cc"):
        native.spawner_binary(tmp_path / "cache")


def test_a_failing_compiler_is_reported_with_its_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "fake-cc"
    fake.write_text("#!/bin/sh\necho 'fake-cc: cannot compile today' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    with pytest.raises(native.SpawnerUnavailable, match="cannot compile today"):
        native.spawner_binary(tmp_path / "cache")


def test_it_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("0", "off", "threads", "NO"):
        monkeypatch.setenv(native.SPAWNER_ENV, value)
        assert not native.enabled()
    monkeypatch.setenv(native.SPAWNER_ENV, "1")
    assert native.enabled()


# --- the protocol ----------------------------------------------------------------------------
class Spawner:
    """The spawner binary with pipes, read line by line with a timeout."""

    def __init__(self, binary: str) -> None:
        self.proc = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pending = b""
        assert self.line().startswith("ready ")

    def send(self, *requests: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"".join(requests))
        self.proc.stdin.flush()

    def line(self, timeout: float = 10.0) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([fd], [], [], left)[0], f"no event within {timeout} s"
            chunk = os.read(fd, 4096)
            assert chunk, "the spawner ended"
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode()

    def close(self) -> list[str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        rest = (self.pending + self.proc.stdout.read()).decode().splitlines()
        self.proc.wait(10)
        return rest


@pytest.fixture
def spawner(binary: str) -> Iterator[Spawner]:
    made = Spawner(binary)
    yield made
    if made.proc.poll() is None:
        made.proc.kill()
        made.proc.wait()


def start(tag: int, sandbox: Path, *argv: str, err: bool = True) -> bytes:
    fields = [str(tag), str(sandbox), str(sandbox / "stdout.txt"), str(sandbox / "stderr.txt") if err else "", *argv]
    return b"S\0" + "\0".join(fields).encode() + b"\n"


def test_units_start_in_order_on_the_tokens_given_with_their_files(spawner: Spawner, tmp_path: Path) -> None:
    spawner.send(start(1, tmp_path / "u1", "/bin/sh", "-c", "echo out; echo err >&2; pwd"),
                 start(2, tmp_path / "u2", "sh", "-c", "echo both >&2; exit 3", err=False), b"T\n")
    kinds = [spawner.line().split() for _ in range(4)]
    assert [k[:2] for k in kinds] == [["s", "1"], ["e", "1"], ["s", "2"], ["e", "2"]]  # one token: one at a time
    assert kinds[1][2] == "0" and kinds[3][2] == "3"
    assert kinds[1][4] == "1" and kinds[3][4] == "0"  # the token stayed while a unit was queued
    assert (tmp_path / "u1" / "stdout.txt").read_text() == f"out\n{tmp_path / 'u1'}\n"
    assert (tmp_path / "u1" / "stderr.txt").read_text() == "err\n"
    assert (tmp_path / "u2" / "stdout.txt").read_text() == "both\n"
    assert not (tmp_path / "u2" / "stderr.txt").exists()
    assert spawner.close()[-1].startswith("x ")


def test_a_unit_it_cannot_start_is_reported_and_its_token_kept(spawner: Spawner, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    spawner.send(start(1, tmp_path / "u1", "no-such-program-here"), start(2, tmp_path / "file" / "u2", "true"),
                 start(3, tmp_path / "u3", "true"), b"T\n")
    assert spawner.line().split()[:3] == ["f", "1", "x"]
    assert spawner.line().split()[:3] == ["f", "2", "m"]
    assert spawner.line().split()[:2] == ["s", "3"]
    assert spawner.line().split()[::4] == ["e", "0"]  # nothing queued: the token came back with it
    spawner.send(b"T\n")
    assert spawner.line() == "r"  # a token with nothing queued goes back at once


def test_signal_drop_and_quiet(spawner: Spawner, tmp_path: Path) -> None:
    spawner.send(start(1, tmp_path / "u1", "sleep", "30"), start(2, tmp_path / "u2", "true"), b"T\n")
    assert spawner.line().split()[:2] == ["s", "1"]
    spawner.send(b"D\x002\n")
    assert spawner.line() == "d 2"
    spawner.send(b"K\x001\x00%d\n" % signal.SIGTERM)
    assert spawner.line().split()[:3] == ["e", "1", str(-signal.SIGTERM)]
    spawner.send(start(3, tmp_path / "u3", "true"), b"Q\n")
    assert [spawner.line(), spawner.line()] == ["d 3", "q"]


def test_nothing_starts_once_the_lease_ran_out(spawner: Spawner, tmp_path: Path) -> None:
    spawner.send(b"L\x000\n", start(1, tmp_path / "u1", "true"), b"T\n")
    time.sleep(0.3)
    assert not (tmp_path / "u1").exists()
    spawner.send(b"L\x00%r\n" % (time.monotonic() + 60))
    assert spawner.line().split()[:2] == ["s", "1"]


def test_end_of_input_kills_what_still_runs(spawner: Spawner, tmp_path: Path) -> None:
    spawner.send(start(1, tmp_path / "u1", "sh", "-c", "trap '' TERM; echo ready; sleep 30 & wait"), b"T\n")
    pid = int(spawner.line().split()[2])
    wait_for(lambda: (tmp_path / "u1" / "stdout.txt").read_text() == "ready\n", 10, "the trap set")
    began = time.monotonic()
    rest = spawner.close()
    assert rest[0].startswith("e 1 -9 ") and rest[-1].startswith("x ")  # SIGTERM ignored: SIGKILL after 1 s
    assert time.monotonic() - began < 5
    wait_for(lambda: not _live_in_group(pid), 10, "the unit's whole group gone, its sleep too")


def _live_in_group(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are not zombies."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry))
    return found


def test_routine_events_come_in_batches_while_work_is_queued(spawner: Spawner, tmp_path: Path) -> None:
    spawner.send(b"W\x001\n", *(start(n, tmp_path / f"u{n}", "true") for n in range(1, 8)), b"T\n")
    first = time.monotonic()
    events = [spawner.line() for _ in range(14)]
    assert [e.split()[:2] for e in events[:2]] == [["s", "1"], ["e", "1"]]
    assert sorted(int(e.split()[1]) for e in events if e.startswith("e")) == list(range(1, 8))
    assert time.monotonic() - first < 5


# --- through a pilot -------------------------------------------------------------------------
def _spawners_of(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if "spawner-" in os.readlink(f"/proc/{child}/exe"):
                found.append(int(child))
    return found


def test_plain_units_run_through_it_and_others_through_slot_threads(pilot_env: object, tmp_path: Path) -> None:
    pcs = PilotComputeService()
    pilot = fork_pilot(pcs, slots=2)
    agent_pid = int(pilot._record()["agent_pid"])
    assert len(_spawners_of(agent_pid)) == 1
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    plain = cds.submit_compute_unit({"executable": "/bin/echo", "arguments": ["plain"]})
    own_env = cds.submit_compute_unit({"executable": "/bin/sh", "arguments": ["-c", "'echo $GREETING'"],
                                       "environment": {"GREETING": "hello"}})
    missing = cds.submit_compute_unit({"executable": "no-such-program-anywhere"})
    script = tmp_path / "no-shebang.sh"
    script.write_text("echo from a script without a shebang\n")
    script.chmod(0o755)
    shebangless = cds.submit_compute_unit({"executable": str(script)})
    cds.wait(timeout=60)
    assert plain.get_state() == State.Done
    assert Path(plain.get_details()["sandbox"], "stdout.txt").read_text() == "plain\n"
    assert Path(own_env.get_details()["sandbox"], "stdout.txt").read_text() == "hello\n"
    details = missing.get_details()  # not started by the spawner: a slot thread says why, as before
    assert details["state"] == State.Failed and details["exit_code"] == 127
    assert details["reason"] == "cannot start unit: No such file or directory: no-such-program-anywhere"
    assert Path(details["sandbox"], "stderr.txt").read_text() == "pilot: no-such-program-anywhere: not found\n"
    assert Path(shebangless.get_details()["sandbox"], "stdout.txt").read_text() == "from a script without a shebang\n"
    cds.cancel()
    pilot.cancel()


def test_a_dead_spawner_fails_its_units_and_slot_threads_take_over(pilot_env: object) -> None:
    pcs = PilotComputeService()
    pilot = fork_pilot(pcs, slots=1)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    running = cds.submit_compute_unit({"executable": "sleep", "arguments": ["30"]})
    wait_for(lambda: running.get_state() == State.Running, 20, "the unit running")
    [spawner_pid] = _spawners_of(int(pilot._record()["agent_pid"]))
    os.kill(spawner_pid, signal.SIGKILL)
    wait_for(lambda: running.get_state() == State.Failed, 20, "the unit failed")
    assert "native spawner ended unexpectedly" in running.get_details()["reason"]
    after = cds.submit_compute_unit({"executable": "/bin/echo", "arguments": ["still", "running"]})
    cds.wait(timeout=60)
    assert after.get_state() == State.Done
    assert Path(after.get_details()["sandbox"], "stdout.txt").read_text() == "still running\n"
    assert pilot.get_state() == State.Running
    cds.cancel()
    pilot.cancel()


def test_turned_off_every_unit_runs_from_slot_threads(pilot_env: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.SPAWNER_ENV, "0")
    pcs = PilotComputeService()
    pilot = fork_pilot(pcs, slots=1)
    assert _spawners_of(int(pilot._record()["agent_pid"])) == []
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    unit = cds.submit_compute_unit({"executable": "/bin/echo", "arguments": ["threads"]})
    cds.wait(timeout=60)
    assert Path(unit.get_details()["sandbox"], "stdout.txt").read_text() == "threads\n"
    cds.cancel()
    pilot.cancel()
