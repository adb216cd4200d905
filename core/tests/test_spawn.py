"""How the agent starts a unit's process: the direct ``fork_exec`` path and the ``Popen``
fallback must behave the same way (files, group, environment, PATH, errors)."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from pilot.agent import spawn as spawn_module
from pilot.agent.spawn import ChildProcess, PopenChild, spawn


@pytest.fixture(params=["direct", "popen"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "direct" and not spawn_module._DIRECT[0]:
        pytest.skip("this interpreter starts units through Popen only")
    monkeypatch.setattr(spawn_module, "_DIRECT", [request.param == "direct"])
    return str(request.param)


def _files(tmp_path: Path) -> tuple[int, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    return os.open(tmp_path / "out", flags, 0o644), os.open(tmp_path / "err", flags, 0o644)


def _run(argv: list[str], tmp_path: Path, env: dict[str, str] | None = None,
         stdin: int = -1) -> tuple[int, str, str]:
    out, err = _files(tmp_path)
    try:
        proc = spawn(argv, str(tmp_path), stdin, out, err, env=env)
    finally:
        os.close(out)
        os.close(err)
    code = proc.wait()
    return code, (tmp_path / "out").read_text(), (tmp_path / "err").read_text()


def test_the_direct_path_is_used_on_this_interpreter(tmp_path: Path, path: str) -> None:
    out, err = _files(tmp_path)
    proc = spawn(["/bin/true"], str(tmp_path), -1, out, err, env=None)
    proc.wait()
    assert type(proc) is (ChildProcess if path == "direct" else PopenChild)


def test_output_cwd_and_exit_code(tmp_path: Path, path: str) -> None:
    code, out, err = _run(["/bin/sh", "-c", "pwd; echo oops >&2; read line; echo $line; exit 3"], tmp_path,
                          stdin=os.open("/dev/null", os.O_RDONLY))
    assert code == 3
    assert out.splitlines() == [str(tmp_path), ""]
    assert err == "oops\n"


def test_environment_and_path_lookup(tmp_path: Path, path: str) -> None:
    code, out, _ = _run(["sh", "-c", "echo $UNIT_VALUE"], tmp_path, env={**os.environ, "UNIT_VALUE": "42"})
    assert (code, out) == (0, "42\n")


def test_the_unit_leads_its_own_process_group(tmp_path: Path, path: str) -> None:
    code, out, _ = _run(["/bin/sh", "-c", "echo $$; ps -o pgid= -p $$"], tmp_path)
    pid, pgid = (int(x) for x in out.split())
    assert code == 0 and pid == pgid != os.getpgid(0)


def test_a_signal_to_the_group_ends_it(tmp_path: Path, path: str) -> None:
    out, err = _files(tmp_path)
    proc = spawn(["/bin/sleep", "30"], str(tmp_path), -1, out, err, env=None)
    os.close(out)
    os.close(err)
    proc.signal_group(signal.SIGTERM)
    assert proc.wait() == -signal.SIGTERM
    proc.signal_group(signal.SIGKILL)  # reaped: its pid may be someone else's now, so nothing is sent


def test_start_errors_are_the_ones_popen_raises(tmp_path: Path, path: str) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    script.chmod(stat.S_IRUSR)
    with pytest.raises(FileNotFoundError) as missing:
        _run(["/no/such/program"], tmp_path)
    assert missing.value.filename == "/no/such/program"
    with pytest.raises(FileNotFoundError):
        _run(["no-such-program-on-path"], tmp_path)
    with pytest.raises(PermissionError):  # no x bit at all: not even root may run it
        _run([str(script)], tmp_path)
    out, err = _files(tmp_path)
    try:
        with pytest.raises(FileNotFoundError) as no_cwd:
            spawn(["/bin/true"], str(tmp_path / "gone"), -1, out, err, env=None)
    finally:
        os.close(out)
        os.close(err)
    assert no_cwd.value.filename == str(tmp_path / "gone")


def test_an_interpreter_with_another_private_signature_falls_back_to_popen(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def other_signature(*args: object) -> int:
        raise TypeError("fork_exec() takes exactly 22 arguments (23 given)")

    monkeypatch.setattr(spawn_module, "_DIRECT", [True])
    monkeypatch.setattr(spawn_module._posixsubprocess, "fork_exec", other_signature)
    code, out, _ = _run(["/bin/sh", "-c", "echo fallback"], tmp_path)
    assert (code, out) == (0, "fallback\n")
    assert spawn_module._DIRECT == [False]
