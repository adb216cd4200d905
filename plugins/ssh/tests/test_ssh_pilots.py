"""SSH pilots end to end on the real sshd on loopback (``ssh://ciuser@127.0.0.1:2222``): the seed
example, cancel, a killed agent, an unknown host key, a host whose Python lacks pilot-core, an
SQLite store the host cannot use, the SSH config honoured, and a Redis store whose password never
reaches a command line."""

from __future__ import annotations

import os
import re
import signal
import stat
from pathlib import Path

import pytest
from ssh_fixtures import SSHEnv

from pilot import ComputeDataService, PilotComputeService, State
from pilot.testing import wait_for

pytestmark = pytest.mark.sshd


def _agent_pid(pilot: object) -> int:
    native = pilot.get_details()["native_id"]  # type: ignore[attr-defined]
    match = re.fullmatch(rf"(\d+)@127\.0\.0\.1/{pilot.id}", native)  # type: ignore[attr-defined]
    assert match, native
    return int(match.group(1))


def _session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (the agent and the units it started)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] not in (b"Z", b"X"):
                out.append(int(entry))
    return out


def _running(pilot: object, timeout: float = 30) -> None:
    wait_for(lambda: pilot.get_state() in (State.Running, State.Failed), timeout, "pilot Running")  # type: ignore[attr-defined]
    assert pilot.get_state() == State.Running, pilot.get_details()["reason"]  # type: ignore[attr-defined]


def test_the_seed_example_over_ssh(ssh_env: SSHEnv) -> None:
    pilot_compute_service = PilotComputeService()
    pilot_compute_description = {"service_url": ssh_env.url, "number_of_processes": 1,
                                 "working_directory": str(ssh_env.work),
                                 "affinity_datacenter_label": "eu-de-south", "affinity_machine_label": "mymachine"}
    pilotjob = pilot_compute_service.create_pilot(pilot_compute_description=pilot_compute_description)
    compute_data_service = ComputeDataService()
    compute_data_service.add_pilot_compute_service(pilot_compute_service)
    compute_unit = compute_data_service.submit_compute_unit({
        "executable": "/bin/date", "arguments": [""], "number_of_processes": 1, "output": "stdout.txt",
        "error": "stderr.txt", "affinity_datacenter_label": "eu-de-south", "affinity_machine_label": "mymachine"})
    compute_data_service.wait(timeout=60)
    assert compute_unit.get_state() == State.Done, compute_unit.get_details()["reason"]
    out = Path(compute_unit.get_local_working_directory(), "stdout.txt")
    assert re.search(r"\d\d:\d\d:\d\d", out.read_text())
    assert out.stat().st_uid == ssh_env.uid  # the remote user ran it
    sandbox = Path(pilotjob.get_details()["sandbox"])
    assert stat.S_IMODE(sandbox.stat().st_mode) == 0o755  # the login's umask (022)
    assert (sandbox / "agent.log").stat().st_uid == ssh_env.uid
    pid = _agent_pid(pilotjob)
    assert pilotjob.get_state() == State.Running
    compute_data_service.cancel()
    pilotjob.cancel()
    assert pilotjob.get_state() == State.Canceled
    wait_for(lambda: not _session_members(pid), 15, "the remote agent gone")


def test_cancel_ends_the_remote_agent_and_its_units(ssh_env: SSHEnv) -> None:
    pilot = PilotComputeService().create_pilot(ssh_env.pilot(number_of_processes=2))
    units = [pilot.submit_compute_unit({"executable": "sleep", "arguments": ["7301"]}) for _ in range(2)]
    wait_for(lambda: all(u.get_state() == State.Running for u in units), 60, "units Running")
    pid = _agent_pid(pilot)
    members = _session_members(pid)
    assert pid in members and len(members) >= 3  # the agent and its two units
    pilot.cancel()
    assert pilot.get_state() == State.Canceled
    assert [u.get_state() for u in units] == [State.Canceled] * 2
    wait_for(lambda: not _session_members(pid), 15, "agent and units gone")


def test_a_killed_agent_fails_the_pilot_and_hands_its_units_back(ssh_env: SSHEnv) -> None:
    pcs = PilotComputeService()
    pilot = pcs.create_pilot(ssh_env.pilot())
    _running(pilot)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    first = cds.submit_compute_unit({"executable": "sleep", "arguments": ["7301"]})
    wait_for(lambda: first.get_state() == State.Running, 60, "the first unit Running")
    rest = cds.submit_compute_units([{"executable": "/bin/echo", "arguments": [str(n)]} for n in range(3)])
    pid = _agent_pid(pilot)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: pilot.get_state() == State.Failed, 30, "pilot Failed")
    assert f"agent process {pid} on 127.0.0.1 is gone" in pilot.get_details()["reason"]
    assert first.get_state() == State.Failed
    wait_for(lambda: not _session_members(pid), 15, "the orphaned unit ended by the cleanup")
    assert all(u.get_state() == State.Pending and u.get_details()["pilot"] is None for u in rest)
    pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 1,
                      "working_directory": str(ssh_env.shared / "local")})
    cds.wait(timeout=60)
    assert [u.get_state() for u in rest] == [State.Done] * 3


def test_an_unknown_host_key_is_refused(ssh_env: SSHEnv, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    pilot = PilotComputeService().create_pilot(ssh_env.pilot(extra={"known_hosts": str(empty)}))
    assert pilot.get_state() == State.Failed
    reason = pilot.get_details()["reason"]
    assert "host key of 127.0.0.1 port 2222 is not trusted" in reason and str(empty) in reason


def test_a_host_without_pilot_core_fails_the_pilot_saying_so(ssh_env: SSHEnv,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PILOT_SITE_CONFIG", str(ssh_env.shared / "none.toml"))  # no site python: python3
    pilot = PilotComputeService().create_pilot(ssh_env.pilot())
    assert pilot.get_state() == State.Failed
    reason = pilot.get_details()["reason"]
    assert "python3 on ciuser@127.0.0.1:2222 cannot run the agent: pilot-core is not installed" in reason
    assert "ModuleNotFoundError" in reason and "site configuration" in reason


def test_an_sqlite_store_the_host_cannot_reach_is_refused(ssh_env: SSHEnv, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PILOT_HOME", str(tmp_path / "private"))  # under pytest's 0700 directory
    pilot = PilotComputeService().create_pilot(ssh_env.pilot())
    assert pilot.get_state() == State.Failed
    reason = pilot.get_details()["reason"]
    assert "the embedded SQLite store" in reason and "cannot read files beside it" in reason
    assert "Redis" in reason and not list((tmp_path / "private").glob(".pilot-ssh-probe-*"))
    readonly = ssh_env.shared / "readonly"  # the host sees it, the remote user cannot write it
    readonly.mkdir(mode=0o755)
    monkeypatch.setenv("PILOT_HOME", str(readonly))
    pilot = PilotComputeService().create_pilot(ssh_env.pilot())
    assert "cannot write it or its directory as ciuser" in pilot.get_details()["reason"]


def test_a_sandbox_the_user_cannot_create_fails_the_pilot(ssh_env: SSHEnv) -> None:
    pilot = PilotComputeService().create_pilot(ssh_env.pilot(working_directory="/root/not-for-ciuser"))
    assert pilot.get_state() == State.Failed
    reason = pilot.get_details()["reason"]
    assert "cannot create the pilot sandbox /root/not-for-ciuser/" in reason and "Permission denied" in reason


def test_the_ssh_config_is_honoured_and_extra_python_names_the_python(ssh_env: SSHEnv,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``Host ci-sftp`` of the sshd's config gives host, port, user, key and known_hosts."""
    for name in ("PILOT_SSH_KNOWN_HOSTS", "PILOT_SSH_IDENTITY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("PILOT_SSH_CONFIG", str(Path(ssh_env.sshd["known_hosts"]).parent / "ssh_config"))
    pilot = PilotComputeService().create_pilot({"service_url": "ssh://ci-sftp", "working_directory": str(ssh_env.work),
                                                "extra": {"python": ssh_env.python}})
    unit = pilot.submit_compute_unit({"executable": "id", "arguments": ["-un"]})
    assert unit.wait(timeout=60) == State.Done, unit.get_details()["reason"]
    assert Path(unit.get_local_working_directory(), "stdout.txt").read_text().strip() == ssh_env.user
    assert pilot.get_details()["native_id"].endswith(f"@ci-sftp/{pilot.id}")
    pilot.cancel()


def test_a_redis_store_and_its_password_over_ssh(ssh_env: SSHEnv, redis_store_url: str) -> None:
    password = redis_store_url.split("@", maxsplit=1)[0].rsplit(":", 1)[1]
    pcs = PilotComputeService(redis_store_url)
    pilot = pcs.create_pilot(ssh_env.pilot(environment={"GREETING": "it's \"quoted\" $HOME"}))
    unit = pilot.submit_compute_unit({"executable": "printf", "arguments": ["%s", '"$GREETING"']})
    assert unit.wait(timeout=60) == State.Done, unit.get_details()["reason"]
    assert Path(unit.get_local_working_directory(), "stdout.txt").read_text() == "it's \"quoted\" $HOME"
    pid = _agent_pid(pilot)
    assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert password not in str(pilot.get_details())
    pilot.cancel()
    assert password not in (Path(pilot.get_details()["sandbox"]) / "agent.log").read_text()
