"""The part of the store conformance suite about queries: ``find_units`` filters and fields,
``find_services``, and the counts (``count_units`` by state, ``count_active`` slots) that
``pilot status``, the progress display and placement read. Mixed into ``StoreConformance``;
needs its ``store`` fixture."""

from __future__ import annotations

from pilot.states import State
from pilot.store import CoordinationStore, UnitUpdate
from pilot.testing.records import pilot_record, record_ids, unit_record


class QueryConformance:
    """Store queries; every store must pass these too."""

    def test_find_units_filters(self, store: CoordinationStore) -> None:
        """Every find_units filter narrows the result, and filters combine."""
        store.insert_units([
            unit_record("cu-0"),
            unit_record("cu-1", pilot_id="pilot-1"),
            unit_record("cu-2", pilot_id="pilot-1", state=State.Running),
            unit_record("cu-3", pilot_id="pilot-2", state=State.Done, cds_id="cds-2"),
            unit_record("cu-4", state=State.New, cds_id="cds-2"),
            unit_record("cu-5", pilot_id="pilot-2", state=State.Running, cds_id=None),
        ])
        store.update_units([UnitUpdate("cu-2", {"cancel_requested": True}),
                            UnitUpdate("cu-5", {"cancel_requested": True})])
        assert record_ids(store.find_units()) == [f"cu-{n}" for n in range(6)]
        assert record_ids(store.find_units(cds_id="cds-1")) == ["cu-0", "cu-1", "cu-2"]
        assert record_ids(store.find_units(pilot_id="pilot-2")) == ["cu-3", "cu-5"]
        assert record_ids(store.find_units(states=[State.Running])) == ["cu-2", "cu-5"]
        assert record_ids(store.find_units(states=[State.New, State.Pending])) == ["cu-0", "cu-1", "cu-4"]
        assert record_ids(store.find_units(unbound=True)) == ["cu-0", "cu-4"]
        assert record_ids(store.find_units(cancel_requested=True)) == ["cu-2", "cu-5"]
        assert record_ids(store.find_units(limit=2)) == ["cu-0", "cu-1"]
        assert record_ids(store.find_units(cds_id="cds-2", unbound=True)) == ["cu-4"]
        running = store.find_units(pilot_id="pilot-1", states=[State.Running], cancel_requested=True)
        assert record_ids(running) == ["cu-2"]
        assert record_ids(store.find_units(cds_id="cds-1", states=[State.Pending], unbound=True, limit=5)) == ["cu-0"]
        assert store.find_units(cds_id="cds-missing") == []

    def test_find_units_returns_only_requested_fields(self, store: CoordinationStore) -> None:
        """With ``fields``, each record holds exactly those fields, decoded."""
        store.insert_units([unit_record("cu-1", pilot_id="pilot-1", input_data=["x"]),
                            unit_record("cu-2")])
        got = store.find_units(fields=("id", "state", "input_data", "claimed"))
        assert got == [{"id": "cu-1", "state": "Pending", "input_data": ["x"], "claimed": False},
                       {"id": "cu-2", "state": "Pending", "input_data": None, "claimed": False}]
        assert store.find_units(pilot_id="pilot-1", fields=("id",)) == [{"id": "cu-1"}]

    def test_find_services_lists_every_service_or_those_of_some_kinds(self, store: CoordinationStore) -> None:
        """find_services returns every service record, or those of the kinds asked."""
        store.put_service("cds-f1", "cds", {"n": 1})
        store.put_service("pcs-f1", "pcs", {})
        store.put_service("pd-f1", "pilot-data", {"state": "Running"})
        found = {r["id"]: r for r in store.find_services()}
        assert {"cds-f1", "pcs-f1", "pd-f1"} <= set(found)
        assert found["cds-f1"] == {"id": "cds-f1", "kind": "cds", "data": {"n": 1}}
        assert sorted(r["id"] for r in store.find_services(["cds", "pcs"]) if r["id"].endswith("-f1")) == [
            "cds-f1", "pcs-f1"]
        assert store.find_services([]) == []

    def test_count_units_by_state_of_a_service_a_pilot_and_the_store(self, store: CoordinationStore) -> None:
        """count_units counts units per state value, for one service, one pilot or all."""
        store.insert_pilot(pilot_record("pilot-c"))
        store.insert_units([unit_record(f"cu-c{n}", cds_id="cds-c") for n in range(5)]
                           + [unit_record("cu-d0", cds_id="cds-d")])
        store.bind_units([("cu-c0", "pilot-c"), ("cu-c1", "pilot-c")])
        store.update_units([UnitUpdate("cu-c0", {"state": State.Done}), UnitUpdate("cu-c1", {"state": State.Failed})])
        assert store.count_units(cds_id="cds-c") == {"Pending": 3, "Done": 1, "Failed": 1}
        assert store.count_units(pilot_id="pilot-c") == {"Done": 1, "Failed": 1}
        assert store.count_units(cds_id="cds-d") == {"Pending": 1}
        assert store.count_units(cds_id="nobody") == {}
        assert sum(store.count_units().values()) == 6

    def test_count_active_sums_slots_of_unfinished_units(self, store: CoordinationStore) -> None:
        """count_active counts the slots of bound units that are not final, per pilot."""
        store.insert_units([
            unit_record("cu-1", pilot_id="pilot-1", slots=2),
            unit_record("cu-2", pilot_id="pilot-1", slots=3, state=State.Running),
            unit_record("cu-3", pilot_id="pilot-1", slots=4, state=State.Staging),
            unit_record("cu-4", pilot_id="pilot-1", slots=8, state=State.Done),
            unit_record("cu-5", pilot_id="pilot-1", slots=8, state=State.Failed),
            unit_record("cu-6", pilot_id="pilot-1", slots=8, state=State.Canceled),
            unit_record("cu-7", pilot_id="pilot-2", slots=1, state=State.New),
            unit_record("cu-8", slots=16),
        ])
        assert store.count_active(["pilot-1", "pilot-2", "pilot-3"]) == {"pilot-1": 9, "pilot-2": 1, "pilot-3": 0}
        assert store.count_active(["pilot-2"]) == {"pilot-2": 1}
        assert store.count_active([]) == {}
        # binding, ending and handing back multi-slot units moves their slots
        assert store.bind_units([("cu-8", "pilot-2")]) == ["cu-8"]
        assert store.update_units([UnitUpdate("cu-2", {"state": State.Done})]) == {"cu-2": "Running"}
        assert store.count_active(["pilot-1", "pilot-2"]) == {"pilot-1": 6, "pilot-2": 17}
        assert sorted(store.unbind_units("pilot-2")) == ["cu-7", "cu-8"]
        assert store.count_active(["pilot-2"]) == {"pilot-2": 0}
