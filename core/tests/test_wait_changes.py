"""``wait()`` blocks on the store's change marker (``CoordinationStore.wait_for_change``)
instead of polling: it returns once the units are final, a write wakes it, and while nothing
changes it leaves the store alone."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from pilot import ComputeDataService, PilotComputeService, State, compute
from pilot.compute import poll_until
from pilot.errors import PilotError
from pilot.store.sqlite import SQLiteStore
from pilot.testing import wait_for
from pilot.testing.fixtures import PilotEnv
from pilot.testing.records import unit_record

from helpers import fork_pilot

READS = ("find_units", "count_units", "get_units", "get_pilots", "pilots_of", "get_service", "get_services",
         "children", "count_active")


def _count_reads(monkeypatch: pytest.MonkeyPatch, store: Any) -> list[str]:
    """Record every read of ``store`` (by this process) from now on."""
    calls: list[str] = []

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return real(*args, **kwargs)
        return counted

    for name in READS:
        monkeypatch.setattr(store, name, counting(name, getattr(store, name)))
    return calls


def test_cds_wait_returns_with_every_unit_done() -> None:
    pcs = PilotComputeService()
    fork_pilot(pcs, slots=2)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    units = [cds.submit_compute_unit({"executable": "/bin/sleep", "arguments": [seconds]})
             for seconds in ("0", "0.5", "1")]
    cds.wait(timeout=60)
    assert [unit.get_state() for unit in units] == [State.Done] * 3


@pytest.mark.parametrize("waiter", ["unit", "pilot", "cds"])
def test_a_unit_finishing_wakes_a_blocked_wait(waiter: str, pilot_env: PilotEnv,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """With the periodic look pushed beyond the timeout, only the store change of the unit
    ending can end the wait before its timeout; meanwhile it reads the store a few times."""
    pcs = PilotComputeService()
    pilot = fork_pilot(pcs)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    unit = cds.submit_compute_unit({"executable": "/bin/sleep", "arguments": ["1"]})
    wait_for(lambda: unit.get_state() == State.Running, 30, "the unit Running")
    monkeypatch.setattr(compute, "CHECK_EVERY", 600.0)
    reads = _count_reads(monkeypatch, pilot_env.store())
    waits: dict[str, Callable[..., Any]] = {"unit": unit.wait, "pilot": pilot.wait, "cds": cds.wait}
    waits[waiter](timeout=30)
    assert unit.get_state() == State.Done
    assert len(reads) < 15, f"{len(reads)} store reads while one unit slept 1 s: {reads}"  # polling: 20 a second


def test_wait_leaves_the_store_alone_while_nothing_changes(pilot_env: PilotEnv,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """While a unit sleeps 2 s, ``cds.wait()`` looks at the store a few times (a look every
    0.5 s, and one per write of the agent: about 20 reads), not every few milliseconds (about
    100 reads when it polled)."""
    pcs = PilotComputeService()
    fork_pilot(pcs)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    unit = cds.submit_compute_unit({"executable": "/bin/sleep", "arguments": ["2"]})
    wait_for(lambda: unit.get_state() == State.Running, 30, "the unit Running")
    reads = _count_reads(monkeypatch, pilot_env.store())
    cds.wait(timeout=60)
    assert unit.get_state() == State.Done
    assert len(reads) < 40, f"{len(reads)} store reads while one unit slept 2 s: {reads}"


def test_a_write_from_another_thread_wakes_poll_until(pilot_env: PilotEnv,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``poll_until`` with a store calls ``done()`` again when the store changes (with the
    periodic look pushed beyond the timeout, only the write can end the wait), and not every
    few milliseconds until then."""
    monkeypatch.setattr(compute, "CHECK_EVERY", 600.0)
    store = SQLiteStore(pilot_env.root / "changes.sqlite")
    calls = []

    def done() -> bool | None:
        calls.append(1)
        return True if store.get_units(["cu-1"]) else None

    writer = threading.Timer(0.3, lambda: store.insert_units([unit_record("cu-1")]))
    writer.start()
    try:
        assert poll_until(done, 30, "cu-1", store) is True
    finally:
        writer.join()
        store.close()
    assert len(calls) < 6, f"done() called {len(calls)} times in 0.3 s"


def test_a_store_that_changes_all_the_time_is_not_looked_at_in_a_tight_loop(pilot_env: PilotEnv) -> None:
    """Woken by one write after another for 1 s, ``poll_until`` looks about every 50 ms (as
    polling did), not after every write."""
    store = SQLiteStore(pilot_env.root / "busy.sqlite")
    stop = threading.Event()
    calls = []

    def write() -> None:
        for n in range(1_000_000):
            if stop.wait(0.001):
                return
            store.put_service(f"pcs-{n % 10}", "pcs", {"n": n})

    def done() -> bool | None:
        calls.append(1)
        return True if stop.is_set() else None

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    threading.Timer(1.0, stop.set).start()
    try:
        assert poll_until(done, 30, "the writer to stop", store) is True
    finally:
        stop.set()
        writer.join()
        store.close()
    assert len(calls) < 50, f"done() called {len(calls)} times in 1 s"


class _FailingStore:
    """A store whose change notification fails (its server dropped the subscription)."""

    url = "failing://"

    def __init__(self) -> None:
        self.calls = 0

    def wait_for_change(self, since: int | None, timeout: float) -> int:
        self.calls += 1
        raise PilotError("Redis store failing:// unreachable: connection reset")


def test_a_failing_change_notification_falls_back_to_polling() -> None:
    """A store failure while waiting for a change does not end ``wait()``: it polls instead."""
    store = _FailingStore()
    rounds = iter(range(5))
    assert poll_until(lambda: True if next(rounds) == 4 else None, 30, "round 4", store) is True  # type: ignore[arg-type]
    assert store.calls >= 4



INTERRUPTED = """
import sys
from pilot import ComputeDataService, PilotComputeService
pcs = PilotComputeService()
pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 1})
cds = ComputeDataService()
cds.add_pilot_compute_service(pcs)
cds.submit_compute_units([{"executable": "/bin/sleep", "arguments": ["60"]}])
print(cds.get_url(), flush=True)
cds.wait()
"""


def test_ctrl_c_in_wait_says_the_work_keeps_running_and_how_to_stop_it(pilot_env: PilotEnv) -> None:
    """A user's Ctrl-C (SIGINT) in ``cds.wait()``: the script ends with KeyboardInterrupt as
    Python's own, after one warning naming the service's URL; the unit keeps running and the
    service reconnected from that URL cancels it."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    cds_url = proc.stdout.readline().strip()
    cds = ComputeDataService(cds_url=cds_url)
    wait_for(lambda: [u.get_state() for u in cds.list_compute_units()] == [State.Running], timeout=30)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert "wait interrupted" in err and cds_url in err and "pilot status" in err
    unit = cds.list_compute_units()[0]
    assert unit.get_state() == State.Running  # the work outlived the script, as the warning says
    cds.cancel()
    unit.wait(timeout=30)
    assert unit.get_state() == State.Canceled
