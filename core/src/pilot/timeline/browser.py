"""Opening a timeline page in headless Chromium (Debian's ``chromium``): the DOM after its
JavaScript ran, a screenshot, and the number of unit bars drawn. Used by the tests and the
benchmark; nothing here runs without a browser installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from pilot.errors import PilotError

CHROMIUM = "/usr/bin/chromium"
#: A bar of a unit: plotly draws each point of a bar trace as ``<g class="point"><path ...>``.
_BAR = re.compile(r'<g class="point"[^>]*>\s*<path')
_BAR_TRACE = re.compile(r'<g class="trace bars"')


def chromium() -> str | None:
    """The Chromium executable, if installed."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium")


def run_chromium(page: Path, *args: str, timeout: float = 120, budget_ms: int = 5000) -> str:
    """Run headless Chromium on ``page`` with ``args`` (``--dump-dom``, ``--screenshot=...``) and a
    throw-away profile; its stdout."""
    exe = chromium()
    if exe is None:
        raise PilotError("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="pilot-chromium-") as profile:
        argv = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,900",
                f"--virtual-time-budget={budget_ms}", *args, page.absolute().as_uri()]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise PilotError(f"chromium exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def dump_dom(page: Path, timeout: float = 120) -> str:
    """The page's DOM after its scripts ran."""
    return run_chromium(page, "--dump-dom", timeout=timeout)


def screenshot(page: Path, png: Path, timeout: float = 120) -> Path:
    """A 1400x900 screenshot of the page."""
    # without the flag a large page's last tiles may be captured before they are rastered
    run_chromium(page, "--run-all-compositor-stages-before-draw", f"--screenshot={png.absolute()}", timeout=timeout)
    if not png.exists():
        raise PilotError(f"chromium wrote no screenshot {png}")
    return png


def count_bars(dom: str) -> int:
    """Unit bars in a timeline page's DOM: the points of its bar traces (the other traces are
    lines, which have no points)."""
    if not _BAR_TRACE.search(dom):
        return 0
    return len(_BAR.findall(dom))
