"""The real Grid Engine these tests run against (``bash tests/infra/start-sge.sh start`` in this
repository; any Grid Engine whose ``qsub`` is on PATH elsewhere). Without one the tests skip, and
fail under ``CI=true``."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from pilot.testing.services import service_missing


def grid_engine_problem(queue: str) -> str | None:
    """Why Grid Engine cannot take jobs in ``queue`` here, or None."""
    if shutil.which("qsub") is None or shutil.which("qconf") is None:
        return "no qsub/qconf on PATH (Debian: gridengine-client)"
    try:
        result = subprocess.run(["qconf", "-sq", queue], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"qconf failed: {exc}"
    if result.returncode != 0:
        return f"qconf -sq {queue}: {' '.join((result.stderr or result.stdout).split())[:300]}"
    return None


@pytest.fixture(scope="session")
def sge_queue() -> str:
    """The queue to submit to (``$PILOT_TEST_SGE_QUEUE``, else ``all.q``), once Grid Engine answers."""
    queue = os.environ.get("PILOT_TEST_SGE_QUEUE", "all.q")
    problem = grid_engine_problem(queue)
    if problem:
        service_missing("Grid Engine", problem)
    return queue

