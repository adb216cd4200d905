"""Late binding with more than one pilot (fork pilots, embedded store): units go only to running
pilots with room, spread over them, move back when their pilot cannot run them, and do not need
the process that submitted them."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pilot import ComputeDataService, ComputeUnit, PilotComputeService, State
from pilot.binding import PREFETCH_PER_SLOT, PREFETCH_SECONDS
from pilot.plugin import hookimpl
from pilot.plugin.manager import PluginManager
from pilot.plugin.types import NativeStatus, PilotJobRequest, ResourceAdaptorRecord
from pilot.session import Session

from helpers import fork_pilot, wait_for


class HeldQueue:
    """A stand-in for a batch queue that never starts its jobs (no batch system runs in the
    core tests; tests/test_late_binding_batch.py does this on the real SLURM cluster)."""

    def __init__(self, service_url: str) -> None:
        self.canceled: list[str] = []

    def submit(self, request: PilotJobRequest) -> str:
        return f"held-{request.pilot_id}"

    def status(self, native_id: str) -> NativeStatus:
        return NativeStatus(State.Canceled if native_id in self.canceled else State.Pending)

    def cancel(self, native_id: str) -> None:
        self.canceled.append(native_id)


@hookimpl
def pilot_resource_adaptors() -> list[ResourceAdaptorRecord]:
    return [ResourceAdaptorRecord(name="held", schemes=("held",), factory=HeldQueue)]


def _pilots(units: list[ComputeUnit]) -> Counter[str]:
    return Counter(u.get_details()["pilot"] for u in units)


def test_a_pilot_waiting_in_its_queue_gets_no_units() -> None:
    session = Session(PluginManager(extra_plugins={"held-queue": sys.modules[__name__]}))
    pcs = PilotComputeService(session=session)
    queued = pcs.create_pilot({"service_url": "held://localhost", "number_of_processes": 4})
    running = fork_pilot(pcs)
    assert queued.get_state() == State.Pending
    cds = ComputeDataService(session=session)
    cds.add_pilot_compute_service(pcs)
    units = cds.submit_compute_units([{"executable": "/bin/sleep", "arguments": ["0.2"]}] * 20)
    cds.wait(timeout=30)
    assert [u.get_state() for u in units] == [State.Done] * 20
    assert _pilots(units) == {running.get_url(): 20}
    assert queued.list_compute_units() == []
    assert queued.get_state() == State.Pending
    cds.cancel()


def test_a_pilot_added_later_takes_its_share_at_once() -> None:
    first, second = PilotComputeService(), PilotComputeService()
    early = fork_pilot(first)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(first)
    units = cds.submit_compute_units([{"executable": "/bin/sleep", "arguments": ["0.5"]}] * 10)
    time.sleep(0.3)
    cds.add_pilot_compute_service(second)
    late = fork_pilot(second)
    cds.wait(timeout=60)
    counts = _pilots(units)
    assert counts[late.get_url()] >= 3, counts
    assert counts[early.get_url()] + counts[late.get_url()] == 10


def test_units_spread_in_proportion_to_free_slots() -> None:
    pcs = PilotComputeService()
    small, large = fork_pilot(pcs, slots=1), fork_pilot(pcs, slots=3)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    units = cds.submit_compute_units([{"executable": "/bin/sleep", "arguments": ["0.3"]}] * 24)
    cds.wait(timeout=60)
    counts = _pilots(units)
    assert counts[large.get_url()] >= 2 * counts[small.get_url()] > 0, counts


def test_an_agent_holds_no_more_than_its_prefetch() -> None:
    pcs = PilotComputeService()
    pilot = fork_pilot(pcs, slots=1)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    cds.submit_compute_units([{"executable": "/bin/sleep", "arguments": ["0.1"]}] * 30)
    store = cds._store
    held = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        held.append(len(store.find_units(pilot_id=pilot.id, states=[State.Pending, State.Running], fields=("id",))))
        if not store.find_units(cds_id=cds.id, states=[State.Pending, State.Running], limit=1, fields=("id",)):
            break
        time.sleep(0.02)
    cds.wait(timeout=30)
    assert max(held) <= 1 + PREFETCH_PER_SLOT
    # 0.1 s units start at most 10 a second on one slot (20 in a 0.1 s window of the rate's estimate)
    bound = 1 + math.ceil(20 * PREFETCH_SECONDS)
    assert max(held) <= bound, f"a 1-slot pilot running 0.1 s units held {max(held)} units (at most {bound})"


def _claimed_by(store: Any, pilot_id: str, units: list[ComputeUnit]) -> bool:
    return all(u["pilot_id"] == pilot_id for u in store.get_units([u.id for u in units]))


def test_units_held_by_a_busy_pilot_move_to_a_free_one() -> None:
    pcs_busy, pcs_free = PilotComputeService(), PilotComputeService()
    busy = fork_pilot(pcs_busy)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs_busy)
    long = cds.submit_compute_unit({"executable": "/bin/sleep", "arguments": ["3031"]})
    wait_for(lambda: long.get_state() == State.Running, 20, "the long unit running")
    short = cds.submit_compute_unit({"executable": "/bin/true"})
    wait_for(lambda: _claimed_by(cds._store, busy.id, [short]), 20, "the busy pilot to claim the short unit")
    cds.add_pilot_compute_service(pcs_free)
    free = fork_pilot(pcs_free)
    assert short.wait(timeout=30) == State.Done
    assert short.get_details()["pilot"] == free.get_url()
    assert long.get_state() == State.Running
    # the busy agent made the short unit's sandbox ahead of its start; giving it back undid that
    assert Path(short.get_local_working_directory()).parent == Path(free.get_details()["sandbox"])
    assert not (Path(busy.get_details()["sandbox"]) / short.id).exists()
    cds.cancel()


def test_units_canceled_before_their_start_leave_no_sandbox() -> None:
    pcs = PilotComputeService()
    pilot = fork_pilot(pcs)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    long = cds.submit_compute_unit({"executable": "/bin/sleep", "arguments": ["3033"]})
    wait_for(lambda: long.get_state() == State.Running, 20, "the long unit running")
    queued = cds.submit_compute_unit({"executable": "/bin/true"})
    wait_for(lambda: _claimed_by(cds._store, pilot.id, [queued]), 20, "the pilot to claim the queued unit")
    queued.cancel()
    assert queued.wait(timeout=30) == State.Canceled
    sandbox = Path(pilot.get_details()["sandbox"]) / queued.id
    wait_for(lambda: not sandbox.exists(), 10, "the canceled unit's sandbox to go")
    long.cancel()
    cds.cancel()


def test_a_canceled_pilot_gives_back_what_it_had_not_started() -> None:
    pcs_doomed, pcs_other = PilotComputeService(), PilotComputeService()
    doomed = fork_pilot(pcs_doomed)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs_doomed)
    long = cds.submit_compute_unit({"executable": "/bin/sleep", "arguments": ["3032"]})
    wait_for(lambda: long.get_state() == State.Running, 20, "the long unit running")
    rest = cds.submit_compute_units([{"executable": "/bin/true"}] * 2)
    wait_for(lambda: any(u["pilot_id"] == doomed.id for u in cds._store.get_units([u.id for u in rest])), 20,
             "the pilot to claim a queued unit")
    doomed.cancel()
    cds.add_pilot_compute_service(pcs_other)
    other = fork_pilot(pcs_other)
    cds.wait(timeout=60)
    assert long.get_state() == State.Canceled
    assert [u.get_state() for u in rest] == [State.Done, State.Done]
    assert _pilots(rest) == {other.get_url(): 2}
    # what the doomed agent had made ahead for them, it undid as it drained
    assert not any((Path(doomed.get_details()["sandbox"]) / u.id).exists() for u in rest)


def test_a_killed_agent_loses_at_most_its_running_unit(tmp_path: Path) -> None:
    pcs = PilotComputeService()
    victim, survivor = fork_pilot(pcs), fork_pilot(pcs)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    log = tmp_path / "ran.log"
    units = cds.submit_compute_units([{"executable": f"echo u{n} >> {log}; sleep 0.5"} for n in range(10)])
    wait_for(lambda: any(u.get_state() == State.Running and u.get_details()["pilot"] == victim.get_url()
                         for u in units), 20, "a unit running on the victim")
    os.kill(int(victim._record()["agent_pid"]), signal.SIGKILL)
    cds.wait(timeout=60)
    states = Counter(u.get_state() for u in units)
    assert states[State.Done] >= 9, states
    assert victim.get_state() == State.Failed
    assert sum(u.get_details()["pilot"] == survivor.get_url() for u in units) >= 5
    ran = Counter(log.read_text().split())
    assert max(ran.values()) == 1, f"a unit started twice: {ran}"
    assert len(ran) == 10


SUBMIT_AND_EXIT = """
import sys
from pilot import ComputeDataService
cds = ComputeDataService(cds_url=sys.argv[1])
units = cds.submit_compute_units([{"executable": "/bin/sleep", "arguments": ["0.1"]}] * 5)
print("\\n".join(u.get_url() for u in units))
"""


def test_units_run_after_the_submitting_process_exits() -> None:
    pcs = PilotComputeService()
    fork_pilot(pcs, slots=2)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    cds_url = cds.get_url()
    del cds  # no ComputeDataService lives in this process while the units run
    out = subprocess.run([sys.executable, "-c", SUBMIT_AND_EXIT, cds_url], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert len(out) == 5
    assert [ComputeUnit(url).wait(timeout=30) for url in out] == [State.Done] * 5


@pytest.mark.parametrize("restartable", [False, True])
def test_a_unit_running_on_a_dead_pilot_fails_or_runs_again(restartable: bool) -> None:
    pcs = PilotComputeService()
    victim = fork_pilot(pcs)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    unit = cds.submit_compute_unit({"executable": "/bin/sleep", "arguments": ["3033"], "restartable": restartable})
    wait_for(lambda: unit.get_state() == State.Running, 20, "the unit running")
    os.kill(int(victim._record()["agent_pid"]), signal.SIGKILL)
    wait_for(lambda: victim.get_state() == State.Failed, 20, "the pilot found dead")
    if restartable:
        assert unit.get_state() == State.Pending
        assert unit.get_details()["attempts"] == 1
    else:
        assert unit.get_state() == State.Failed
        assert "agent process" in unit.get_details()["reason"]
    cds.cancel()
