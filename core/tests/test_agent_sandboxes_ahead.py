"""Sandboxes made ahead of their units' start (``SlotWorkers.add``): how many at most, what a
unit dropped before its start leaves behind, and when the slot makes its own."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from pilot.agent.workers import PREPARE_AHEAD_MAX, SlotWorkers
from pilot.plugin.types import AgentResources, NodeSlots


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """The pilot sandbox."""
    path = tmp_path / "pilot-sandbox"
    path.mkdir()
    return path


@pytest.fixture
def workers(sandbox: Path) -> Any:
    """Slot workers halted from the start: queued units are prepared but never started."""
    read, write = os.pipe()
    resources = AgentResources(nodes=(NodeSlots(socket.gethostname(), 2),))
    made = SlotWorkers(resources, {}, str(sandbox), write, low_water=1)
    made.halted.set()
    yield made
    made.stop(1.0)
    os.close(read)
    os.close(write)


def _unit(n: int, **description: Any) -> dict[str, Any]:
    return {"id": f"cu-{n:04d}", "slots": 1, "description": {"executable": "/bin/true", **description}}


def test_at_most_so_many_sandboxes_are_made_ahead(workers: SlotWorkers, sandbox: Path) -> None:
    workers.add([_unit(n) for n in range(PREPARE_AHEAD_MAX + 20)])
    made = sorted(p.name for p in sandbox.iterdir())
    assert made == [f"cu-{n:04d}" for n in range(PREPARE_AHEAD_MAX)]  # the first ones, in queue order
    assert sorted(p.name for p in (sandbox / "cu-0000").iterdir()) == ["stderr.txt", "stdout.txt"]


def test_units_dropped_before_their_start_leave_nothing(workers: SlotWorkers, sandbox: Path) -> None:
    workers.add([_unit(n) for n in range(5)])
    dropped = workers.drop({"cu-0001", "cu-0003"})
    assert sorted(r["id"] for r in dropped) == ["cu-0001", "cu-0003"]
    assert sorted(p.name for p in sandbox.iterdir()) == ["cu-0000", "cu-0002", "cu-0004"]
    workers.stop(1.0)  # the agent drains: what was never started is undone too
    assert list(sandbox.iterdir()) == []


def test_what_was_there_before_is_kept(workers: SlotWorkers, sandbox: Path) -> None:
    (sandbox / "cu-0000").mkdir()
    (sandbox / "cu-0000" / "notes.txt").write_text("mine")
    workers.add([_unit(0), _unit(1, output="out.txt", error="out.txt")])
    assert sorted(p.name for p in (sandbox / "cu-0001").iterdir()) == ["out.txt"]  # one file for both
    workers.stop(1.0)
    assert sorted(p.name for p in sandbox.iterdir()) == ["cu-0000"]  # not made by the agent: kept
    assert sorted(p.name for p in (sandbox / "cu-0000").iterdir()) == ["notes.txt"]


def test_units_with_data_or_a_directory_of_their_own_are_left_to_their_slot(workers: SlotWorkers,
                                                                            sandbox: Path) -> None:
    workers.add([_unit(0, working_directory=str(sandbox / "elsewhere")),
                 _unit(1, file_transfer=["file:///etc/hostname > SUBJOB_WORK_DIR"]), _unit(2)])
    assert sorted(p.name for p in sandbox.iterdir()) == ["cu-0002"]
