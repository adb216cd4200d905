"""The SSH adaptor without an SSH server: URLs, the choice of Python, what the agent's
environment gets, and the remote scripts run by a local ``sh`` (start, status and cancel against
real processes, a dead agent's zombie and a pid that belongs to someone else)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilot import PilotComputeService, PilotError, State
from pilot.descriptions import PilotComputeDescription
from pilot.plugin.manager import PluginManager
from pilot.plugin.types import PilotJobRequest
from pilot.procs import session_members
from pilot.testing import wait_for
from pilot.testing.fixtures import PilotEnv
from pilot_ssh import scripts
from pilot_ssh.adaptor import SSHAdaptor, agent_python, forwarded_environment
from pilot_ssh.connection import Connections, Target, parse_service_url


def test_the_plugin_registers_the_ssh_scheme() -> None:
    assert PluginManager().adaptor_for("ssh").name == "ssh"


@pytest.mark.parametrize(("url", "target"), [
    ("ssh://host", Target("host", None, None)),
    ("ssh://me@host.example.org:2222", Target("host.example.org", 2222, "me")),
    ("ssh://me@127.0.0.1:2222/", Target("127.0.0.1", 2222, "me")),
    ("ssh://[::1]:22", Target("::1", 22, None)),
])
def test_service_urls(url: str, target: Target) -> None:
    assert parse_service_url(url) == target


@pytest.mark.parametrize(("url", "message"), [
    ("ssh://me:secret@host", "passwords are not accepted"),
    ("ssh://host/scratch/me", "put the pilot sandboxes in working_directory"),
    ("ssh://", "not an SSH pilot URL"),
    ("ssh://host:99999", "not a valid SSH URL"),
])
def test_bad_service_urls(url: str, message: str) -> None:
    with pytest.raises(PilotError, match=message) as info:
        parse_service_url(url)
    assert "secret" not in str(info.value)


def test_native_ids_name_pid_host_and_pilot() -> None:
    adaptor = SSHAdaptor("ssh://me@cluster:2222")
    with pytest.raises(PilotError, match="is not a pilot of ssh://me@cluster:2222"):
        adaptor.status("123@elsewhere/pilot-1")
    with pytest.raises(PilotError, match="is not a pilot of"):
        adaptor.cancel("junk")


def _request(tmp_path: Path, argv0: str = sys.executable, pre: tuple[str, ...] = (), **keys: object) -> PilotJobRequest:
    desc = PilotComputeDescription.from_dict({"service_url": "ssh://me@cluster:2222", **keys})
    return PilotJobRequest("pilot-x", desc, tmp_path / "pilot-x",
                           (argv0, "-m", "pilot.agent", "--pilot", "pilot-x", "--store", "sqlite:///s"), {}, pre)


def test_the_python_that_runs_the_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "resources.toml"
    site.write_text('[resources.cluster]\nservice_url = "ssh://me@cluster:2222"\npython = "/opt/py/bin/python3"\n'
                    'pre_commands = ["module load py"]\n'
                    '[resources.other]\nservice_url = "ssh://cluster"\npython = "/wrong"\n')
    monkeypatch.setenv("PILOT_SITE_CONFIG", str(site))
    # a resource with the same ssh:// URL: its python and pre_commands
    assert agent_python(_request(tmp_path)) == ("/opt/py/bin/python3", ("module load py",))
    # the resource the description names (pilot.site already put its python in argv[0])
    assert agent_python(_request(tmp_path, "/named/python", ("x",), resource="cluster")) == ("/named/python", ("x",))
    # the description's extra.python wins
    assert agent_python(_request(tmp_path, extra={"python": "/mine/python"}))[0] == "/mine/python"
    monkeypatch.setenv("PILOT_SITE_CONFIG", str(tmp_path / "none.toml"))
    assert agent_python(_request(tmp_path)) == ("python3", ())


def test_what_the_agent_environment_gets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PILOT_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("PILOT_HOME", "/local/only")
    monkeypatch.setenv("PILOT_REDIS_PASSWORD", "s3cret")
    desc = PilotComputeDescription.from_dict({"service_url": "ssh://h", "environment": {"A": "1"}})
    request = PilotJobRequest("p", desc, tmp_path, ("python3",), {"A": "1", "PILOT_LOG_LEVEL": "INFO"})
    env = forwarded_environment(request, "redis://127.0.0.1:6390/0")
    assert env["A"] == "1" and env["PILOT_LOG_LEVEL"] == "INFO" and env["PILOT_REDIS_PASSWORD"] == "s3cret"
    assert "PILOT_HOME" not in env and "PATH" not in env
    script = scripts.start(sandbox="/s b", argv=("python3", "-m", "pilot.agent"), environment=env,
                           pre_commands=(), store_url="redis://127.0.0.1:6390/0", pilot_id="p", probe=None)
    assert "export PILOT_REDIS_PASSWORD=s3cret" in script and "sandbox='/s b'" in script


# --- the scripts, run by a local sh -----------------------------------------------------------------
def _sh(script: str) -> str:
    return subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, check=True, timeout=30).stdout


@pytest.fixture
def fake_agent() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A process whose command line is an agent's, leading its own session, with a 'unit'."""
    pilot_id = f"pilot-{uuid.uuid4().hex}"
    code = "import subprocess, time; subprocess.Popen(['sleep', '7302']); time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", code, "-m", "pilot.agent", "--pilot", pilot_id, "--store", "x"],
                            start_new_session=True)
    wait_for(lambda: len(session_members(proc.pid)) == 2, 10, "the fake agent and its unit")
    yield proc, pilot_id
    for pid in session_members(proc.pid):
        os.kill(pid, signal.SIGKILL)
    proc.wait()


def test_status_sees_the_agent_and_a_dead_one(fake_agent: tuple[subprocess.Popen[bytes], str],
                                              tmp_path: Path) -> None:
    proc, pilot_id = fake_agent
    assert f"{scripts.MARK} running" in _sh(scripts.status(proc.pid, pilot_id, None))
    assert f"{scripts.MARK} gone" in _sh(scripts.status(proc.pid, "pilot-other", None))
    log = tmp_path / "agent.log"
    log.write_text("line 1\nboom: the store is gone\n")
    os.kill(proc.pid, signal.SIGKILL)
    time.sleep(0.2)  # not reaped: a zombie is gone too
    out = _sh(scripts.status(proc.pid, pilot_id, str(log)))
    assert f"{scripts.MARK} gone" in out and "boom: the store is gone" in out


def test_cancel_ends_agent_and_units(fake_agent: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, pilot_id = fake_agent
    assert f"{scripts.MARK} ended" in _sh(scripts.cancel(proc.pid, pilot_id, 2.0))
    proc.wait(5)
    wait_for(lambda: not session_members(proc.pid), 5, "the unit ended")


def test_cancel_after_kill_ends_the_orphaned_units(fake_agent: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, pilot_id = fake_agent
    os.kill(proc.pid, signal.SIGKILL)
    time.sleep(0.2)  # the agent is a zombie; its unit lives on in its session
    assert len(session_members(proc.pid)) == 1
    assert f"{scripts.MARK} ended" in _sh(scripts.cancel(proc.pid, pilot_id, 2.0))
    wait_for(lambda: not session_members(proc.pid), 5, "the orphaned unit ended")


def test_cancel_never_signals_a_pid_that_is_not_the_agent(fake_agent: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, _ = fake_agent
    assert f"{scripts.MARK} not-ours" in _sh(scripts.cancel(proc.pid, "pilot-someone-else", 1.0))
    assert proc.poll() is None and len(session_members(proc.pid)) == 2


# --- the adaptor end to end, its "remote" commands run by a local sh -------------------------------------
@pytest.fixture
def local_shell(pilot_env: PilotEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every remote command runs here, as this user: no SSH server needed (and the test's own
    store, ``pilot_env``)."""
    def run(self: Connections, t: Target, command: str, stdin: str = "", timeout: float = 60) -> tuple[int, str, str]:
        assert command == "sh -s"  # the script (and any secret in it) goes on stdin only
        done = subprocess.run(["sh", "-s"], input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
        return done.returncode, done.stdout, done.stderr

    monkeypatch.setattr(Connections, "run", run)


def test_a_pilot_through_the_scripts(local_shell: None, tmp_path: Path) -> None:
    pilot = PilotComputeService().create_pilot({
        "service_url": "ssh://localhost", "working_directory": str(tmp_path / "work"),
        "environment": {"WHO": "it's me"}, "extra": {"python": sys.executable}})
    unit = pilot.submit_compute_unit({"executable": "echo", "arguments": ['"$WHO"']})
    assert unit.wait(timeout=60) == State.Done, unit.get_details()["reason"]
    assert Path(unit.get_local_working_directory(), "stdout.txt").read_text() == "it's me\n"
    pid = int(pilot.get_details()["native_id"].partition("@")[0])
    assert pilot.get_details()["native_id"] == f"{pid}@localhost/{pilot.id}"
    assert (tmp_path / "work" / pilot.id / "agent.log").exists()
    pilot.cancel()
    assert pilot.get_state() == State.Canceled
    wait_for(lambda: not session_members(pid), 10, "the agent gone")


def test_a_python_without_pilot_core_fails_the_pilot_saying_so(local_shell: None, tmp_path: Path) -> None:
    bare = tmp_path / "bare-python"
    bare.write_text(f'#!/bin/sh\nexec {sys.executable} -I -S "$@"\n')  # no site-packages: no pilot-core
    bare.chmod(0o755)
    pilot = PilotComputeService().create_pilot({"service_url": "ssh://localhost", "working_directory": str(tmp_path),
                                                "extra": {"python": str(bare)}})
    assert pilot.get_state() == State.Failed
    reason = pilot.get_details()["reason"]
    assert f"{bare} on localhost cannot run the agent: pilot-core is not installed for it" in reason
    assert "No module named 'pilot'" in reason
    missing = PilotComputeService().create_pilot({"service_url": "ssh://localhost", "working_directory": str(tmp_path),
                                                  "extra": {"python": "/no/such/python3"}})
    assert "no Python '/no/such/python3' on localhost" in missing.get_details()["reason"]


def test_pre_commands_run_before_the_agent(local_shell: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "resources.toml"
    site.write_text(f'[resources.box]\nservice_url = "ssh://localhost"\npython = "{sys.executable}"\n'
                    'pre_commands = ["export FROM_SITE=yes", "echo prepared"]\n')
    monkeypatch.setenv("PILOT_SITE_CONFIG", str(site))
    pilot = PilotComputeService().create_pilot({"resource": "box", "working_directory": str(tmp_path / "w")})
    unit = pilot.submit_compute_unit({"executable": "echo", "arguments": ["$FROM_SITE"]})
    assert unit.wait(timeout=60) == State.Done, unit.get_details()["reason"]
    assert Path(unit.get_local_working_directory(), "stdout.txt").read_text() == "yes\n"
    assert "prepared" in (tmp_path / "w" / pilot.id / "agent.log").read_text()
    pilot.cancel()


def test_status_of_an_unreachable_host_raises_then_backs_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The heartbeat decides while the host cannot be asked; a dead host is not asked every poll."""
    calls = []

    def run(self: Connections, t: Target, command: str, stdin: str = "", timeout: float = 60) -> tuple[int, str, str]:
        calls.append(t)
        raise PilotError(f"cannot connect to {t.where()}: Connection refused")

    monkeypatch.setattr(Connections, "run", run)
    adaptor = SSHAdaptor("ssh://me@gone.example.org")
    for _ in range(3):
        with pytest.raises(PilotError, match=r"cannot connect to me@gone\.example\.org"):
            adaptor.status("123@gone.example.org/pilot-1")
    assert len(calls) == 1
