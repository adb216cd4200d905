"""``pilot status`` and ``pilot watch`` against real fork pilots; ``watch`` in a terminal under
tmux, reading the screen."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from pilot import ComputeDataService, PilotComputeService
from pilot.testing.fixtures import PilotEnv


def pilot_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pilot.cli", *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_status_counts_pilots_units_and_says_why_the_oldest_unit_waits(pilot_env: PilotEnv) -> None:
    pcs = PilotComputeService()
    pilot = pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 1})
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    cds.submit_compute_units([{"executable": "/bin/true"}] * 3)
    cds.wait()
    orphan = ComputeDataService()  # a service without pilots: its unit can never start
    waiting = orphan.submit_compute_unit({"executable": "/bin/true"})
    doc = json.loads(pilot_cli("status", "--json").stdout)
    assert doc["pilots"] == {"Running": {"pilots": 1, "slots": 1, "held": 0}}
    assert doc["units"] == {"Done": 3, "Pending": 1} and doc["units_active"] == 1
    assert doc["oldest_queued"]["id"] == waiting.id
    assert "no pilot of the service is alive" in doc["oldest_queued"]["waits_because"]
    text = pilot_cli("status").stdout
    assert "Running" in text and "Done" in text and waiting.id in text and "no pilot of the service" in text
    pilot.cancel()
    waiting.cancel()
    doc = json.loads(pilot_cli("status", "--json").stdout)
    assert doc["pilots"] == {"Canceled": {"pilots": 1, "slots": 1, "held": 0}} and doc["oldest_queued"] is None


def test_status_of_a_busy_pilot_names_its_full_slots(pilot_env: PilotEnv) -> None:
    pcs = PilotComputeService()
    pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 1})
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    units = cds.submit_compute_units([{"executable": "/bin/sleep", "arguments": ["20"]}] * 2)
    deadline = time.monotonic() + 20
    while units[0].get_state() != "Running" and time.monotonic() < deadline:
        time.sleep(0.05)
    doc = json.loads(pilot_cli("status", "--json").stdout)
    assert doc["pilots"]["Running"]["held"] >= 1
    assert doc["oldest_queued"]["id"] == units[1].id
    because = doc["oldest_queued"]["waits_because"]
    assert "slot" in because and "1 units running" in because, because
    cds.cancel()


@pytest.fixture
def tmux() -> Iterator[list[str]]:
    """A tmux server of this test's own (its own socket), killed afterwards."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    command = ["tmux", "-L", f"pilot-test-{uuid.uuid4().hex[:8]}"]
    yield command
    subprocess.run([*command, "kill-server"], capture_output=True, check=False)


def test_watch_redraws_until_every_unit_is_final_then_exits(pilot_env: PilotEnv, tmux: list[str]) -> None:
    pcs = PilotComputeService()
    pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 2})
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    cds.submit_compute_units([{"executable": "/bin/sleep", "arguments": ["1"]}] * 4)
    shell = (f"env PILOT_HOME={shlex.quote(os.environ['PILOT_HOME'])} {shlex.quote(sys.executable)} "
             f"-m pilot.cli watch --interval 0.2; echo watch-exit=$?; sleep 60")
    subprocess.run([*tmux, "new-session", "-d", "-x", "120", "-y", "40", shell], check=True)
    screens = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        screen = subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True, text=True, check=True).stdout
        screens.append(screen)
        if "watch-exit=" in screen:
            break
        time.sleep(0.2)
    final = screens[-1]
    assert "watch-exit=0" in final, final
    assert any("Running" in s and "active" in s for s in screens[:-1])  # it drew while units ran
    flat = " ".join(final.split())
    assert "units (4, 0 active)" in flat and re.search(r"\b4 Done\b", flat), final
    assert "no unit is queued" in final
