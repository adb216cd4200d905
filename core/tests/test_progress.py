"""The progress display of ``wait()``, seen as a person sees it: a script waits on a service, a
pilot or a PilotComputeService in a real terminal (a tmux pane whose screen the test reads), in a
pipe, under ``CI`` and with ``PILOT_PROGRESS=0``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pilot import ComputeDataService, PilotComputeService, PilotError
from pilot.testing.fixtures import PilotEnv
from pilot.testing.services import service_missing

SCRIPT = """
from pilot import ComputeDataService, PilotComputeService
pcs = PilotComputeService()
pilot = pcs.create_pilot({{"service_url": "fork://localhost", "number_of_processes": 2}})
cds = ComputeDataService()
cds.add_pilot_compute_service(pcs)
{submit}
{wait}
print("WAITED", flush=True)
pcs.cancel()
"""
TO_SERVICE = ("cds.submit_compute_units([{'executable': '/bin/sleep', 'arguments': ['0.1']} for _ in range(12)]"
              " + [{'executable': '/bin/false'}])")
TO_PILOT = "[pilot.submit_compute_unit({'executable': '/bin/sleep', 'arguments': ['0.1']}) for _ in range(6)]"
WAITS = {"service": (TO_SERVICE, "cds.wait({arg})"), "pilot": (TO_PILOT, "pilot.wait({arg})"),
         "pilot-compute-service": (TO_SERVICE, "cds.wait(progress=False); import threading; "
                                               "threading.Timer(0.5, pcs.cancel).start(); pcs.wait({arg})")}


def _script(tmp_path: Path, kind: str = "service", arg: str = "") -> Path:
    path = tmp_path / f"run-{uuid.uuid4().hex[:6]}.py"
    submit, wait = WAITS[kind]
    path.write_text(SCRIPT.format(submit=submit, wait=wait.format(arg=arg)))
    return path


def _in_terminal(tmp_path: Path, script: Path, env: dict[str, str]) -> str:
    """Run ``script`` in a tmux pane (a real terminal) and return its screen once it printed WAITED."""
    if shutil.which("tmux") is None:
        service_missing("tmux", "tmux is not installed (tests/infra/install-tools.sh installs it)")
    socket = f"pilot-test-{uuid.uuid4().hex[:8]}"
    exports = " ".join(f"{k}={v}" for k, v in env.items())
    command = f"cd {tmp_path} && env {exports} {sys.executable} {script}; sleep 60"
    subprocess.run(["tmux", "-L", socket, "new-session", "-d", "-s", "t", "-x", "160", "-y", "25", command],
                   check=True, env={k: v for k, v in os.environ.items() if k != "TMUX"})
    try:
        screen = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "WAITED" not in screen:
            time.sleep(0.2)
            screen = subprocess.run(["tmux", "-L", socket, "capture-pane", "-p", "-t", "t"], capture_output=True,
                                    text=True, check=True).stdout
        assert "WAITED" in screen, screen
        return screen
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], check=False)


def _env(pilot_env: PilotEnv, **more: str) -> dict[str, str]:
    env = {"PILOT_HOME": str(pilot_env.root / "home"), "CI": "", "PILOT_PROGRESS": "", "TERM": "xterm-256color"}
    env.update(more)
    return env


def test_a_terminal_shows_units_by_state_rate_and_progress(pilot_env: PilotEnv, tmp_path: Path) -> None:
    screen = _in_terminal(tmp_path, _script(tmp_path), _env(pilot_env))
    line = next(line for line in screen.splitlines() if "units of cds-" in line)
    assert "13/13" in line and "Done 12" in line and "Failed 1" in line and "units/s" in line, screen


def test_a_pilot_wait_shows_its_units(pilot_env: PilotEnv, tmp_path: Path) -> None:
    screen = _in_terminal(tmp_path, _script(tmp_path, "pilot"), _env(pilot_env))
    assert any("units of pilot " in line and "/6" in line and "Done 6" in line for line in screen.splitlines()), screen


def test_a_pilot_compute_service_wait_shows_the_units_of_its_pilots(pilot_env: PilotEnv, tmp_path: Path) -> None:
    screen = _in_terminal(tmp_path, _script(tmp_path, "pilot-compute-service"), _env(pilot_env))
    assert any("units of pcs-" in line and "'s pilots" in line and "13/13" in line
               for line in screen.splitlines()), screen


@pytest.mark.parametrize("setting", [{"PILOT_PROGRESS": "0"}, {"CI": "true"}])
def test_no_display_with_pilot_progress_0_or_under_ci(pilot_env: PilotEnv, tmp_path: Path,
                                                      setting: dict[str, str]) -> None:
    screen = _in_terminal(tmp_path, _script(tmp_path), _env(pilot_env, **setting))
    assert "units of" not in screen and "━" not in screen, screen


def test_wait_progress_false_wins_over_a_terminal(pilot_env: PilotEnv, tmp_path: Path) -> None:
    screen = _in_terminal(tmp_path, _script(tmp_path, arg="progress=False"), _env(pilot_env))
    assert "units of" not in screen, screen


def test_nothing_is_drawn_into_a_pipe_unless_asked(pilot_env: PilotEnv, tmp_path: Path) -> None:
    env = {**os.environ, "PILOT_HOME": str(pilot_env.root / "home")}
    env.pop("CI", None)
    env.pop("PILOT_PROGRESS", None)
    quiet = subprocess.run([sys.executable, str(_script(tmp_path))], capture_output=True, text=True, env=env,
                           timeout=120, check=True)
    assert "WAITED" in quiet.stdout and "units of" not in quiet.stderr + quiet.stdout
    asked = subprocess.run([sys.executable, str(_script(tmp_path, arg="progress=True"))], capture_output=True,
                           text=True, env=env, timeout=120, check=True)
    assert "units of cds-" in asked.stderr and "Done 12" in asked.stderr and "WAITED" not in asked.stderr


def test_a_bad_progress_value_is_refused(pilot_env: PilotEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    cds = ComputeDataService()
    with pytest.raises(PilotError, match="progress must be True, False or None"):
        cds.wait(progress="yes")  # type: ignore[arg-type]
    monkeypatch.setenv("PILOT_PROGRESS", "maybe")
    with pytest.raises(PilotError, match="PILOT_PROGRESS must be 0 or 1"):
        PilotComputeService().wait(timeout=0)
