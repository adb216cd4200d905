"""Plugins that replace the placement policy (``pilot_place_unit``) and observe state changes
(``pilot_state_changed``) in the client process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

import pytest

from pilot import ComputeDataService, PilotComputeService, State
from pilot.plugin import hookimpl
from pilot.plugin.manager import PluginManager
from pilot.plugin.types import PilotView, UnitView
from pilot.session import Session
from pilot.states import Kind

from helpers import wait_for


class LastPilotPolicy:
    """Sends every unit to the newest pilot that has room."""

    @hookimpl
    def pilot_place_unit(self, unit: UnitView, pilots: Sequence[PilotView]) -> str | None:
        roomy = [p for p in pilots if p.free >= unit.slots]
        return roomy[-1].id if roomy else None


class RoomRecorder:
    """The default policy's answer, remembering the most room any pilot had when asked."""

    def __init__(self) -> None:
        self.room: list[int] = []

    @hookimpl(tryfirst=True)
    def pilot_place_unit(self, unit: UnitView, pilots: Sequence[PilotView]) -> str | None:
        self.room.append(max(p.free for p in pilots))
        return None  # let the default policy answer


class Recorder:
    """Remembers every state change it is told about."""

    def __init__(self) -> None:
        self.seen: list[tuple[Kind, str, State, State]] = []

    @hookimpl
    def pilot_state_changed(self, kind: Kind, entity_id: str, old: State, new: State) -> None:
        self.seen.append((kind, entity_id, old, new))


def _fork(pcs: PilotComputeService) -> object:
    pilot = pcs.create_pilot({"service_url": "fork://localhost", "working_directory": os.getcwd()})
    wait_for(lambda: pilot.get_state() == State.Running, 10, "pilot running")
    return pilot


def test_hook_pilot_place_unit() -> None:
    """A plugin replaces the placement policy: every unit goes to the pilot it picks."""
    session = Session(PluginManager(extra_plugins={"last-pilot": LastPilotPolicy()}))
    pcs = PilotComputeService(session=session)
    _fork(pcs)
    last = _fork(pcs)
    cds = ComputeDataService(session=session)
    cds.add_pilot_compute_service(pcs)
    units = cds.submit_compute_units([{"executable": "/bin/true"}] * 5)
    cds.wait(timeout=60)
    assert {u.get_details()["pilot"] for u in units} == {last.get_url()}  # type: ignore[attr-defined]
    cds.cancel()


def test_the_policy_is_not_asked_once_every_pilot_is_full() -> None:
    recorder = RoomRecorder()
    session = Session(PluginManager(extra_plugins={"room": recorder}))
    pcs = PilotComputeService(session=session)
    pilot = pcs.create_pilot({"service_url": "fork://localhost", "working_directory": os.getcwd(),
                              "number_of_processes": 1})
    cds = ComputeDataService(session=session)
    cds.add_pilot_compute_service(pcs)
    cds.submit_compute_units([{"executable": "/bin/true"}] * 600)  # more than the pilot's window
    cds.wait(timeout=120)
    assert len(recorder.room) >= 600
    assert min(recorder.room) >= 1, "the policy was asked while no pilot had room"
    assert pilot.get_state() == State.Running
    cds.cancel()


def test_hook_pilot_state_changed() -> None:
    """Observers hear the state changes made in this process."""
    recorder = Recorder()
    session = Session(PluginManager(extra_plugins={"recorder": recorder}))
    pcs = PilotComputeService(session=session)
    pilot = pcs.create_pilot({"service_url": "fork://localhost", "working_directory": os.getcwd()})
    running = pilot.submit_compute_unit({"executable": "/bin/sleep", "arguments": ["3020"]})
    queued = pilot.submit_compute_unit({"executable": "/bin/true"})
    wait_for(lambda: running.get_state() == State.Running, 20, "unit running")
    queued.cancel()
    pilot.cancel()
    assert (Kind.pilot, pilot.id, State.New, State.Pending) in recorder.seen
    assert (Kind.unit, queued.id, State.Pending, State.Canceled) in recorder.seen
    assert (Kind.pilot, pilot.id, State.Running, State.Canceled) in recorder.seen


def test_a_blocked_builtin_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PILOT_DISABLE_PLUGINS", "fork")
    pcs = PilotComputeService(session=Session())
    with pytest.raises(Exception, match="no resource adaptor for scheme 'fork'"):
        pcs.create_pilot({"service_url": "fork://localhost"})


def test_pilot_command_lists_plugins() -> None:
    out = subprocess.run([sys.executable, "-m", "pilot.cli", "plugins"], capture_output=True, text=True,
                         check=True).stdout
    adaptors = next(line for line in out.splitlines() if line.startswith("resource adaptors:"))
    assert {"fork", "local"} <= set(adaptors.split(":")[1].replace(",", " ").split())
    assert "coordination stores:" in out and "sqlite" in out
    assert "launch methods:" in out and "mpirun" in out


def test_benchmark_command_prints_its_figures() -> None:
    out = subprocess.run([sys.executable, "-m", "pilot.bench", "-n", "40", "--raw", "20"], capture_output=True,
                         text=True, check=True, timeout=120).stdout
    for figure in ("units per second, end to end", "raw spawn rate, argv", "raw spawn rate, /bin/sh -c",
                   "ratio to argv spawn rate", "submit time", "create_pilot to Running", "client peak memory",
                   "agent peak memory"):
        assert figure in out
    assert "40 Done" in out
