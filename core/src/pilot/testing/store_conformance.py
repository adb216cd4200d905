"""The conformance suite every coordination store must pass.

A store's test module subclasses ``StoreConformance`` and overrides the ``store_url`` fixture
(a URL of a fresh, empty store), and optionally ``open_store`` (default: open the URL through
the plugin manager, as the core does)::

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def store_url(self, tmp_path):
            return f"mystore://{tmp_path}"

Some tests open the store in child processes (two agents claiming at once; a restart); with
``open_store`` overridden they import the test module by name, so it must be on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pilot.errors import PilotError
from pilot.states import State
from pilot.store import ACTIVE_UNIT_STATES, CoordinationStore, UnitUpdate
from pilot.testing._store_children import CLAIM_CHILD, READER_CHILD, WRITER_CHILD
from pilot.testing.change_conformance import ChangeConformance
from pilot.testing.query_conformance import QueryConformance
from pilot.testing.queue_conformance import QueueConformance
from pilot.testing.records import pilot_record, record_ids, unit_record

_DEFAULT_CLASS = ("pilot.testing.store_conformance", "StoreConformance")
__all__ = ["StoreConformance", "pilot_record", "unit_record"]



class StoreConformance(QueueConformance, QueryConformance, ChangeConformance):
    """Behaviour every ``CoordinationStore`` must show. Subclass it and override ``store_url``."""

    @pytest.fixture
    def store_url(self) -> str:
        """The URL of a fresh, empty store; every store's test module must override this."""
        pytest.fail("override the store_url fixture in your StoreConformance subclass")

    def open_store(self, url: str) -> CoordinationStore:
        """Open the store at ``url`` (default: through the plugin manager, like the core)."""
        from pilot.session import Session

        return Session().store(url)

    @pytest.fixture
    def store(self, store_url: str) -> Iterator[Any]:
        """The store at ``store_url``, closed after the test."""
        opened = self.open_store(store_url)
        yield opened
        opened.close()

    # --- helpers for child processes ------------------------------------------------------
    def _child_target(self) -> tuple[str, str]:
        if type(self).open_store is StoreConformance.open_store:
            return _DEFAULT_CLASS
        return type(self).__module__, type(self).__qualname__

    def _child(self, code: str, url: str, *args: str) -> subprocess.Popen[str]:
        module, qualname = self._child_target()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if isinstance(p, str) and p)
        return subprocess.Popen([sys.executable, "-c", code, module, qualname, url, *args],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)

    @staticmethod
    def _finish(proc: subprocess.Popen[str]) -> str:
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"child process hung; stderr:\n{err}") from None
        assert proc.returncode == 0, f"child process failed ({proc.returncode}):\n{err}"
        return out

    # --- services and links ---------------------------------------------------------------
    def test_service_put_get_and_replace(self, store: CoordinationStore) -> None:
        """A service record comes back as written; putting it again replaces it."""
        assert store.get_service("pcs-1") is None
        store.put_service("pcs-1", "pcs", {"heartbeat_timeout": 30.0, "names": ["a", "b"]})
        assert store.get_service("pcs-1") == {"id": "pcs-1", "kind": "pcs",
                                              "data": {"heartbeat_timeout": 30.0, "names": ["a", "b"]}}
        store.put_service("pcs-1", "pcs", {"heartbeat_timeout": 5.0})
        assert store.get_service("pcs-1") == {"id": "pcs-1", "kind": "pcs", "data": {"heartbeat_timeout": 5.0}}
        assert store.get_service("pcs-2") is None

    def test_service_records_update_conditionally(self, store: CoordinationStore) -> None:
        store.put_service("du-1", "data-unit", {"state": "Pending", "files": ["a"]})
        store.put_service("du-2", "data-unit", {"state": "Running"})
        assert [r["id"] for r in store.get_services(["du-2", "missing", "du-1"])] == ["du-2", "du-1"]
        assert store.update_service("du-1", {"state": State.Running, "size": 3}, expect=[State.Pending])
        assert not store.update_service("du-1", {"state": State.Failed}, expect=[State.Pending])
        assert not store.update_service("missing", {"state": State.Failed})
        assert (store.get_service("du-1") or {}).get("data") == {"state": "Running", "files": ["a"], "size": 3}
        assert store.update_service("du-2", {"reason": "x"})
        assert (store.get_service("du-2") or {}).get("data") == {"state": "Running", "reason": "x"}

    def test_links_keep_order_without_duplicates(self, store: CoordinationStore) -> None:
        """Children come back in link order, once each; unlink removes one link only."""
        assert store.children("cds-1") == []
        for child in ("pcs-b", "pcs-a", "pds-c", "pcs-a"):
            store.link("cds-1", child)
        store.link("cds-2", "pcs-a")
        assert store.children("cds-1") == ["pcs-b", "pcs-a", "pds-c"]
        store.unlink("cds-1", "pcs-a")
        store.unlink("cds-1", "never-linked")
        assert store.children("cds-1") == ["pcs-b", "pds-c"]
        assert store.children("cds-2") == ["pcs-a"]

    # --- pilots ---------------------------------------------------------------------------
    def test_pilot_round_trip(self, store: CoordinationStore) -> None:
        """A pilot comes back with every field as written, JSON fields decoded."""
        record = pilot_record("pilot-1", hosts=["n1", "n2"], native_id="123@h")
        store.insert_pilot(record)
        [got] = store.get_pilots(["pilot-1"])
        for key, value in record.items():
            assert got[key] == value, key
        assert got["state"] == "New"
        assert got["cancel_requested"] is False
        assert got["heartbeat"] is None
        assert store.get_pilots(["pilot-missing"]) == []
        assert store.get_pilots([]) == []

    def test_pilot_queries_oldest_first(self, store: CoordinationStore) -> None:
        """get_pilots leaves missing ids out; pilots_of and find_pilots filter, oldest first."""
        store.insert_pilot(pilot_record("pilot-c", service_id="pcs-1"))
        store.insert_pilot(pilot_record("pilot-a", service_id="pcs-2", state=State.Running))
        store.insert_pilot(pilot_record("pilot-b", service_id="pcs-1", state=State.Running))
        assert sorted(record_ids(store.get_pilots(["pilot-b", "pilot-x", "pilot-c"]))) == ["pilot-b", "pilot-c"]
        assert record_ids(store.pilots_of(["pcs-1"])) == ["pilot-c", "pilot-b"]
        assert record_ids(store.pilots_of(["pcs-2", "pcs-1"])) == ["pilot-c", "pilot-a", "pilot-b"]
        assert store.pilots_of(["pcs-9"]) == []
        assert store.pilots_of([]) == []
        assert record_ids(store.find_pilots()) == ["pilot-c", "pilot-a", "pilot-b"]
        assert record_ids(store.find_pilots([State.Running])) == ["pilot-a", "pilot-b"]
        assert record_ids(store.find_pilots([State.New, State.Done])) == ["pilot-c"]
        assert store.find_pilots([State.Failed]) == []

    def test_update_pilot_only_in_expected_state(self, store: CoordinationStore) -> None:
        """update_pilot applies only while the state is expected, and says whether it did."""
        store.insert_pilot(pilot_record("pilot-1"))
        assert store.update_pilot("pilot-1", {"state": State.Pending, "native_id": "7@h"}, expect=[State.New])
        assert not store.update_pilot("pilot-1", {"state": State.Failed, "reason": "late"}, expect=[State.New])
        [got] = store.get_pilots(["pilot-1"])
        assert (got["state"], got["native_id"], got["reason"]) == ("Pending", "7@h", None)
        assert store.update_pilot("pilot-1", {"cancel_requested": True, "hosts": ["h"]})
        assert store.update_pilot("pilot-1", {"state": "Canceled"}, expect=[State.New, State.Pending, State.Running])
        [got] = store.get_pilots(["pilot-1"])
        assert (got["state"], got["cancel_requested"], got["hosts"]) == ("Canceled", True, ["h"])
        assert not store.update_pilot("pilot-missing", {"state": State.Failed})

    def test_heartbeat_records_and_returns_pilot(self, store: CoordinationStore) -> None:
        """heartbeat stores the time and returns the pilot, so the agent sees a cancel."""
        store.insert_pilot(pilot_record("pilot-1", state=State.Running))
        beat = store.heartbeat("pilot-1", 1234.5)
        assert beat is not None
        assert (beat["id"], beat["state"], beat["heartbeat"], beat["cancel_requested"]) == \
            ("pilot-1", "Running", 1234.5, False)
        store.update_pilot("pilot-1", {"cancel_requested": True})
        beat = store.heartbeat("pilot-1", 1240.0)
        assert beat is not None
        assert (beat["heartbeat"], beat["cancel_requested"]) == (1240.0, True)
        assert store.get_pilots(["pilot-1"])[0]["heartbeat"] == 1240.0
        assert store.heartbeat("pilot-missing", 1.0) is None

    def test_unknown_field_is_rejected(self, store: CoordinationStore) -> None:
        """A record field that the store does not know raises PilotError instead of vanishing."""
        with pytest.raises(PilotError, match="bogus"):
            store.insert_pilot(pilot_record("pilot-1", bogus=1))
        with pytest.raises(PilotError, match="bogus"):
            store.insert_units([unit_record("cu-1", bogus=1)])
        assert store.get_units(["cu-1"]) == []

    # --- units ----------------------------------------------------------------------------
    def test_unit_round_trip(self, store: CoordinationStore) -> None:
        """A unit comes back with every field as written, JSON fields decoded, flags False."""
        record = unit_record("cu-1", pilot_id="pilot-1", slots=3, datacenter="dc", machine="m",
                             input_data=["sqlite:///s#data-unit/du-1"],
                             description={"executable": "/bin/sh", "arguments": ["-c", "exit 0"],
                                          "environment": {"A": "1"}})
        store.insert_units([record])
        [got] = store.get_units(["cu-1"])
        for key, value in record.items():
            assert got[key] == value, key
        assert got["claimed"] is False
        assert got["cancel_requested"] is False
        assert got["exit_code"] is None

    def test_bulk_insert_of_5000_units_in_one_call(self, store: CoordinationStore) -> None:
        """Five thousand units go in with one call and come back in submission order."""
        ids = [f"cu-{n:05d}" for n in range(5000)]
        store.insert_units([unit_record(unit_id, submitted=float(n)) for n, unit_id in enumerate(ids)])
        assert record_ids(store.find_units(cds_id="cds-1", fields=("id",))) == ids
        sample = [ids[4999], ids[0], ids[2500], ids[17]]
        assert record_ids(store.get_units(sample)) == sample
        assert record_ids(store.get_units(ids)) == ids

    def test_bulk_insert_of_records_with_different_fields(self, store: CoordinationStore) -> None:
        """Records of one bulk insert need not set the same fields; each keeps its own."""
        store.insert_units([
            {"id": "cu-1", "state": State.Pending},
            unit_record("cu-2", pilot_id="pilot-1", slots=4),
            {"id": "cu-3", "state": State.New, "cds_id": "cds-9"},
        ])
        got = {u["id"]: u for u in store.get_units(["cu-1", "cu-2", "cu-3"])}
        assert (got["cu-1"]["pilot_id"], got["cu-1"]["slots"], got["cu-1"]["claimed"]) == (None, 1, False)
        assert (got["cu-2"]["pilot_id"], got["cu-2"]["slots"]) == ("pilot-1", 4)
        assert (got["cu-3"]["cds_id"], got["cu-3"]["state"]) == ("cds-9", "New")
        assert record_ids(store.find_units()) == ["cu-1", "cu-2", "cu-3"]
        store.insert_units([])
        assert len(store.find_units()) == 3

    def test_get_units_keeps_request_order_and_skips_missing(self, store: CoordinationStore) -> None:
        """get_units answers in the order asked, leaving out ids it does not have."""
        store.insert_units([unit_record(f"cu-{n}") for n in range(5)])
        assert record_ids(store.get_units(["cu-3", "cu-missing", "cu-0", "cu-4"])) == ["cu-3", "cu-0", "cu-4"]
        assert store.get_units([]) == []

    def test_update_units_conditional_on_state(self, store: CoordinationStore) -> None:
        """update_units applies each update only in its expected states; returns where it did,
        with the state each unit had before."""
        store.insert_units([unit_record(f"cu-{n}") for n in range(4)])
        store.update_units([UnitUpdate("cu-3", {"state": State.Canceled})])
        applied = store.update_units([
            UnitUpdate("cu-0", {"state": State.Running, "started": 5.0, "host": "h"}, expect=[State.Pending]),
            UnitUpdate("cu-1", {"state": State.Done}, expect=[State.Running]),
            UnitUpdate("cu-2", {"exit_code": 3}),
            UnitUpdate("cu-3", {"state": State.Running}, expect=[State.New, State.Pending]),
            UnitUpdate("cu-missing", {"state": State.Running}),
        ])
        assert applied == {"cu-0": "Pending", "cu-2": "Pending"}
        got = {u["id"]: u for u in store.get_units([f"cu-{n}" for n in range(4)])}
        assert (got["cu-0"]["state"], got["cu-0"]["started"], got["cu-0"]["host"]) == ("Running", 5.0, "h")
        assert got["cu-1"]["state"] == "Pending"
        assert (got["cu-2"]["state"], got["cu-2"]["exit_code"]) == ("Pending", 3)
        assert got["cu-3"]["state"] == "Canceled"
        assert store.update_units([]) == {}

    def test_update_units_conditional_on_pilot(self, store: CoordinationStore) -> None:
        """An update naming a pilot applies only while the unit is bound to that pilot."""
        store.insert_units([unit_record("cu-1", pilot_id="pilot-1"), unit_record("cu-2", pilot_id="pilot-2"),
                            unit_record("cu-3")])
        applied = store.update_units([
            UnitUpdate(f"cu-{n}", {"state": State.Running}, expect=[State.Pending], pilot_id="pilot-1")
            for n in (1, 2, 3)])
        assert applied == {"cu-1": "Pending"}
        assert [u["state"] for u in store.get_units(["cu-1", "cu-2", "cu-3"])] == ["Running", "Pending", "Pending"]

    def test_many_updates_in_one_call(self, store: CoordinationStore) -> None:
        """A bulk update of thousands of units applies each one."""
        ids = [f"cu-{n:04d}" for n in range(2000)]
        store.insert_units([unit_record(i, pilot_id="pilot-1") for i in ids])
        applied = store.update_units([UnitUpdate(i, {"state": State.Done, "exit_code": 0}, expect=[State.Pending],
                                                 pilot_id="pilot-1") for i in ids[::2]])
        assert list(applied) == ids[::2]
        assert set(applied.values()) == {"Pending"}
        assert record_ids(store.find_units(states=[State.Done])) == ids[::2]
        assert record_ids(store.find_units(states=[State.Pending])) == ids[1::2]

    def test_a_unit_named_twice_in_one_call_ends_as_the_last_change_says(self, store: CoordinationStore) -> None:
        """Changes of one unit in one call apply in order: its indexes follow the last one."""
        store.insert_units([unit_record("cu-1", pilot_id="pilot-1"), unit_record("cu-2", pilot_id="pilot-1")])
        applied = store.update_units([
            UnitUpdate("cu-1", {"claimed": True}, pilot_id="pilot-1"),
            UnitUpdate("cu-2", {"state": State.Running}, expect=[State.Pending]),
            UnitUpdate("cu-1", {"claimed": False}, pilot_id="pilot-1"),
            UnitUpdate("cu-2", {"state": State.Done}, expect=[State.Running]),
            UnitUpdate("cu-2", {"state": State.Running}, expect=[State.Running]),  # no longer Running
        ])
        assert applied == {"cu-1": "Pending", "cu-2": "Pending"}  # the state before the call
        assert record_ids(store.find_units(pilot_id="pilot-1", states=ACTIVE_UNIT_STATES)) == ["cu-1"]
        assert record_ids(store.find_units(cds_id="cds-1", states=[State.Done])) == ["cu-2"]
        assert store.count_active(["pilot-1"]) == {"pilot-1": 1}
        assert [u["id"] for u in store.claim_units("pilot-1", 10)] == ["cu-1"]  # claimable again

    def test_bind_units_binds_only_unbound_queued_units(self, store: CoordinationStore) -> None:
        """bind_units binds unbound New/Pending units only, and returns those it bound."""
        store.insert_units([
            unit_record("cu-new", state=State.New),
            unit_record("cu-pending"),
            unit_record("cu-bound", pilot_id="pilot-1"),
            unit_record("cu-running", state=State.Running),
            unit_record("cu-done", state=State.Done),
            unit_record("cu-canceled", state=State.Canceled),
        ])
        bound = store.bind_units([("cu-new", "pilot-2"), ("cu-pending", "pilot-2"), ("cu-bound", "pilot-2"),
                                  ("cu-running", "pilot-2"), ("cu-done", "pilot-2"), ("cu-canceled", "pilot-2"),
                                  ("cu-missing", "pilot-2")])
        assert bound == ["cu-new", "cu-pending"]
        got = {u["id"]: u["pilot_id"] for u in store.find_units()}
        assert got == {"cu-new": "pilot-2", "cu-pending": "pilot-2", "cu-bound": "pilot-1", "cu-running": None,
                       "cu-done": None, "cu-canceled": None}
        assert store.bind_units([("cu-new", "pilot-3")]) == []
        assert store.bind_units([]) == []

    def test_unbind_units_returns_queued_units_including_claimed(self, store: CoordinationStore) -> None:
        """unbind_units hands the pilot's never-started service units back, claimed or not."""
        store.insert_units([
            unit_record("cu-claimed", pilot_id="pilot-1"),
            unit_record("cu-queued", pilot_id="pilot-1"),
            unit_record("cu-new", pilot_id="pilot-1", state=State.New),
            unit_record("cu-running", pilot_id="pilot-1", state=State.Running),
            unit_record("cu-done", pilot_id="pilot-1", state=State.Done),
            unit_record("cu-direct", pilot_id="pilot-1", cds_id=None),
            unit_record("cu-other", pilot_id="pilot-2"),
        ])
        assert record_ids(store.claim_units("pilot-1", 1)) == ["cu-claimed"]
        assert sorted(store.unbind_units("pilot-1")) == ["cu-claimed", "cu-new", "cu-queued"]
        got = {u["id"]: (u["pilot_id"], u["claimed"], u["state"]) for u in store.find_units()}
        assert got["cu-claimed"] == (None, False, "Pending")
        assert got["cu-queued"] == (None, False, "Pending")
        assert got["cu-new"] == (None, False, "New")
        assert got["cu-running"][0] == "pilot-1"
        assert got["cu-done"][0] == "pilot-1"
        assert got["cu-direct"][0] == "pilot-1", "a direct unit has no service to go back to"
        assert got["cu-other"][0] == "pilot-2"
        assert store.unbind_units("pilot-1") == []
        # Unbound units can be bound again, to another pilot, and claimed there.
        assert store.bind_units([("cu-claimed", "pilot-3")]) == ["cu-claimed"]
        assert record_ids(store.claim_units("pilot-3", 5)) == ["cu-claimed"]

    def test_claim_units_oldest_first_never_twice(self, store: CoordinationStore) -> None:
        """claim_units hands out a pilot's pending units oldest first, each once, marked claimed."""
        ids = [f"cu-{n:02d}" for n in range(10)]
        store.insert_units([unit_record(i, pilot_id="pilot-1", submitted=100.0 - n) for n, i in enumerate(ids)])
        first = store.claim_units("pilot-1", 3)
        assert record_ids(first) == ids[:3]
        assert all(u["claimed"] is True and u["pilot_id"] == "pilot-1" and u["state"] == "Pending" for u in first)
        assert first[0]["description"] == {"executable": "/bin/echo", "arguments": ["cu-00"]}
        assert record_ids(store.claim_units("pilot-1", 3)) == ids[3:6]
        assert record_ids(store.claim_units("pilot-1", 100)) == ids[6:]
        assert store.claim_units("pilot-1", 100) == []
        assert all(u["claimed"] for u in store.get_units(ids))

    def test_claim_units_takes_only_pending_units_of_that_pilot(self, store: CoordinationStore) -> None:
        """Units of other pilots, unbound units and started or finished units are never claimed."""
        store.insert_units([
            unit_record("cu-other", pilot_id="pilot-2"),
            unit_record("cu-unbound"),
            unit_record("cu-running", pilot_id="pilot-1", state=State.Running),
            unit_record("cu-staging", pilot_id="pilot-1", state=State.Staging),
            unit_record("cu-done", pilot_id="pilot-1", state=State.Done),
            unit_record("cu-failed", pilot_id="pilot-1", state=State.Failed),
            unit_record("cu-canceled", pilot_id="pilot-1", state=State.Canceled),
            unit_record("cu-mine", pilot_id="pilot-1"),
        ])
        assert record_ids(store.claim_units("pilot-1", 100)) == ["cu-mine"]
        assert store.claim_units("pilot-1", 100) == []
        assert store.claim_units("pilot-9", 100) == []
        assert record_ids(store.claim_units("pilot-2", 100)) == ["cu-other"]
        assert [u["claimed"] for u in store.get_units(["cu-unbound", "cu-running"])] == [False, False]

    def test_bulk_claim(self, store: CoordinationStore) -> None:
        """One claim takes thousands of units at once, oldest first, leaving the rest."""
        ids = [f"cu-{n:05d}" for n in range(5000)]
        store.insert_units([unit_record(i, pilot_id="pilot-1") for i in ids])
        assert record_ids(store.claim_units("pilot-1", 4000)) == ids[:4000]
        assert record_ids(store.claim_units("pilot-1", 4000)) == ids[4000:]
        assert store.claim_units("pilot-1", 4000) == []

    # --- several processes ----------------------------------------------------------------
    def test_two_processes_claiming_concurrently_never_share_a_unit(self, store: CoordinationStore,
                                                                    store_url: str) -> None:
        """Two agent processes claim from one store at once until nothing is left: every unit
        goes to exactly one of them, and each gets its units oldest first."""
        ids = [f"cu-{n:05d}" for n in range(1500)]
        store.insert_units([unit_record(i, pilot_id="pilot-1") for i in ids])
        children = [self._child(CLAIM_CHILD, store_url, "pilot-1", str(batch)) for batch in (7, 11)]
        try:
            for child in children:
                assert child.stdout is not None
                assert child.stdout.readline().strip() == "ready", child.stderr and child.stderr.read()
            for child in children:  # both are connected: let them race
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            claims = [json.loads(self._finish(child)) for child in children]
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        first, second = set(claims[0]), set(claims[1])
        assert len(first) == len(claims[0]), "a process got a unit twice"
        assert len(second) == len(claims[1]), "a process got a unit twice"
        assert first & second == set()
        assert first | second == set(ids)
        order = {unit_id: n for n, unit_id in enumerate(ids)}
        for claim in claims:
            assert [order[i] for i in claim] == sorted(order[i] for i in claim)
        assert store.claim_units("pilot-1", 10) == []
        assert all(u["claimed"] for u in store.get_units(ids))

    def test_states_and_heartbeats_survive_a_restart(self, store_url: str) -> None:
        """What one process wrote is read back, unchanged, by a new process after it exited."""
        writer = self._child(WRITER_CHILD, store_url)
        assert self._finish(writer).strip() == "written"
        assert writer.returncode == 0
        reader = self._child(READER_CHILD, store_url)
        seen = json.loads(self._finish(reader))
        assert seen["service"] == {"id": "pcs-r", "kind": "pcs", "data": {"heartbeat_timeout": 12.5}}
        assert seen["children"] == ["pcs-r"]
        [pilot] = seen["pilots"]
        assert (pilot["state"], pilot["heartbeat"], pilot["native_id"], pilot["hosts"], pilot["slots"]) == \
            ("Running", 1700000000.25, "42@host", ["n1", "n2"], 4)
        assert pilot["description"] == {"service_url": "fork://localhost"}
        units = {u["id"]: u for u in seen["units"]}
        assert (units["cu-r0"]["state"], units["cu-r0"]["exit_code"], units["cu-r0"]["finished"]) == ("Done", 0, 3.0)
        assert (units["cu-r1"]["state"], units["cu-r1"]["exit_code"], units["cu-r1"]["reason"]) == \
            ("Failed", 7, "exit code 7")
        assert (units["cu-r2"]["state"], units["cu-r2"]["started"], units["cu-r2"]["claimed"]) == \
            ("Running", 2.0, True)
        assert (units["cu-r3"]["state"], units["cu-r3"]["claimed"]) == ("Pending", False)
        assert seen["more"] == ["cu-r3"], "claims made before the restart must hold after it"
        # This process sees the same, after both children ended.
        reopened = self.open_store(store_url)
        try:
            assert reopened.get_pilots(["pilot-r"])[0]["heartbeat"] == 1700000000.25
            assert [u["state"] for u in reopened.get_units([f"cu-r{n}" for n in range(4)])] == \
                ["Done", "Failed", "Running", "Pending"]
        finally:
            reopened.close()

    def test_closing_and_reopening_keeps_everything(self, store: CoordinationStore, store_url: str) -> None:
        """Closing a store loses nothing: a store opened again sees every record."""
        store.put_service("pcs-1", "pcs", {})
        store.insert_pilot(pilot_record("pilot-1"))
        store.insert_units([unit_record("cu-1", pilot_id="pilot-1")])
        store.heartbeat("pilot-1", time.time())
        store.close()
        again = self.open_store(store_url)
        try:
            assert again.get_service("pcs-1") is not None
            assert again.get_pilots(["pilot-1"])[0]["heartbeat"] is not None
            assert record_ids(again.claim_units("pilot-1", 5)) == ["cu-1"]
        finally:
            again.close()
