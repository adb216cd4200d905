"""The part of the store conformance suite about change notification: ``wait_for_change``,
which every ``wait()`` blocks on instead of polling. A waiter stays blocked while nothing is
written and wakes on a write from another store object or another thread; a write made before
the wait began ends it at once. Mixed into ``StoreConformance``; needs its ``store`` and
``store_url`` fixtures and ``open_store``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from pilot.states import State
from pilot.store import CoordinationStore, UnitUpdate
from pilot.testing.records import pilot_record, unit_record

#: Seconds a waiter blocks at most in these tests: a woken waiter returns long before.
LONG = 60.0


def _waiter(store: CoordinationStore) -> tuple[threading.Thread, threading.Event, list[tuple[int, int]]]:
    """A thread that reads the marker, sets the event, then waits (up to ``LONG`` s, again
    after an early return without a change) for a change; it appends ``(before, after)``."""
    ready, result = threading.Event(), []

    def run() -> None:
        before = after = store.wait_for_change(None, 0)
        ready.set()
        for _ in range(100):  # early returns are allowed; a missed change is not
            after = store.wait_for_change(before, LONG)
            if after != before:
                break
        result.append((before, after))

    return threading.Thread(target=run, daemon=True), ready, result


class ChangeConformance:
    """Change markers and blocking on them; every store must pass these too."""

    if TYPE_CHECKING:
        def open_store(self, url: str) -> CoordinationStore: ...

    def test_the_marker_stays_while_nothing_is_written(self, store: CoordinationStore) -> None:
        """With nothing written, the wait returns at its timeout with the marker it was given."""
        store.put_service("pcs-1", "pcs", {})
        marker = store.wait_for_change(None, 0)
        assert isinstance(marker, int)
        assert store.wait_for_change(None, 5) == marker  # no since: the current marker, at once
        assert store.wait_for_change(marker, 0.3) == marker
        assert store.wait_for_change(marker, 0) == marker

    def test_every_kind_of_write_changes_the_marker(self, store: CoordinationStore) -> None:
        """A write made after the marker was read ends the wait at once with another marker:
        each write to services, links, pilots and units."""
        writes: list[tuple[str, Callable[[], object]]] = [
            ("put_service", lambda: store.put_service("pcs-1", "pcs", {"state": "New"})),
            ("update_service", lambda: store.update_service("pcs-1", {"state": "Running"})),
            ("link", lambda: store.link("cds-1", "pcs-1")),
            ("unlink", lambda: store.unlink("cds-1", "pcs-1")),
            ("insert_pilot", lambda: store.insert_pilot(pilot_record("pilot-1"))),
            ("update_pilot", lambda: store.update_pilot("pilot-1", {"state": State.Running}, [State.New])),
            ("heartbeat", lambda: store.heartbeat("pilot-1", 1234.5)),
            ("insert_units", lambda: store.insert_units([unit_record("cu-1"), unit_record("cu-2")])),
            ("bind_units", lambda: store.bind_units([("cu-1", "pilot-1")])),
            ("claim_units", lambda: store.claim_units("pilot-1", 1)),
            ("unbind_units", lambda: store.unbind_units("pilot-1")),
            ("update_units", lambda: store.update_units([UnitUpdate("cu-2", {"state": State.Canceled})])),
        ]
        for name, write in writes:
            before = store.wait_for_change(None, 0)
            assert write() not in (False, [], {}), f"{name} changed nothing"
            assert store.wait_for_change(before, LONG) != before, f"{name} left the marker as it was"

    def test_a_write_by_another_store_object_wakes_a_waiter(self, store: CoordinationStore,
                                                             store_url: str) -> None:
        """A waiter blocked for a long time wakes, with another marker, when another client
        (another connection) writes a unit."""
        other = self.open_store(store_url)
        try:
            thread, ready, result = _waiter(store)
            thread.start()
            assert ready.wait(30)
            other.insert_units([unit_record("cu-1")])
            thread.join(LONG / 2)
            assert not thread.is_alive(), "the waiter slept through the write"
            [(before, after)] = result
            assert after != before
        finally:
            other.close()

    def test_a_write_from_another_thread_wakes_a_waiter(self, store: CoordinationStore) -> None:
        """The same store object, written from one thread, wakes a waiter in another."""
        store.insert_units([unit_record("cu-1")])
        thread, ready, result = _waiter(store)
        thread.start()
        assert ready.wait(30)
        store.update_units([UnitUpdate("cu-1", {"state": State.Running}, expect=[State.Pending])])
        thread.join(LONG / 2)
        assert not thread.is_alive(), "the waiter slept through the write"
        [(before, after)] = result
        assert after != before
