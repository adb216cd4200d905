"""Small helpers shared by the core tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pilot import PilotCompute, PilotComputeService, State
from pilot.testing import wait_for


def fork_pilot(pcs: PilotComputeService, slots: int = 1, **extra: Any) -> PilotCompute:
    """A fork pilot under the current directory, waited until Running."""
    pilot = pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": slots,
                              "working_directory": os.path.join(os.getcwd(), "work"), **extra})
    wait_for(lambda: pilot.get_state() == State.Running, 10, f"{pilot} Running")
    return pilot




def pids_matching(needle: str) -> list[int]:
    """Live processes whose command line contains ``needle``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle.encode() in cmdline and state != "Z":
            found.append(int(entry))
    return found


def run_python(code: str, timeout: float = 60) -> str:
    """Run ``code`` in a fresh interpreter with this environment; return its stdout."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                            check=False)
    assert result.returncode == 0, f"subprocess failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout
