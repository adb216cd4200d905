"""The part of the store conformance suite about late binding by pull: agents claim units
straight from their services' queues (``claim_units`` with ``services``), find the queued units
that carry placement constraints (``find_units(constrained=True)``) and hand units back
(``unbind_units`` with ``ids``). Mixed into ``StoreConformance``; needs its ``store`` fixture."""

from __future__ import annotations

from pilot.states import State
from pilot.store import CoordinationStore, UnitUpdate
from pilot.testing.records import record_ids, unit_record


class QueueConformance:
    """Claims from service queues; every store must pass these too."""

    def test_claim_takes_plain_units_of_the_services_and_binds_them(self, store: CoordinationStore) -> None:
        """An agent claims unbound, unconstrained Pending units of its services, oldest first,
        after the units bound to its pilot; each claimed unit is bound to the pilot."""
        store.insert_units([
            unit_record("cu-0"),
            unit_record("cu-other", cds_id="cds-2"),
            unit_record("cu-direct", cds_id=None, pilot_id="pilot-1"),
            unit_record("cu-labeled", datacenter="eu"),
            unit_record("cu-machine", machine="m1"),
            unit_record("cu-data", input_data=["sqlite:///x#data-unit/du-1"]),
            unit_record("cu-big", slots=4),
            unit_record("cu-running", state=State.Running),
            unit_record("cu-taken", pilot_id="pilot-2"),
            unit_record("cu-1"),
            unit_record("cu-2"),
        ])
        claimed = store.claim_units("pilot-1", 3, services=["cds-1"], max_slots=2)
        assert record_ids(claimed) == ["cu-0", "cu-direct", "cu-1"]
        assert {u["pilot_id"] for u in claimed} == {"pilot-1"}
        assert all(u["claimed"] for u in store.get_units(record_ids(claimed)))
        assert record_ids(store.claim_units("pilot-1", 10, services=["cds-1"], max_slots=2)) == ["cu-2"]
        assert store.claim_units("pilot-1", 10, services=["cds-1"], max_slots=2) == []
        assert record_ids(store.claim_units("pilot-3", 10, services=["cds-1"], max_slots=4)) == ["cu-big"]
        assert record_ids(store.claim_units("pilot-3", 10, services=["cds-1", "cds-2"])) == ["cu-other"]
        assert store.claim_units("pilot-3", 0, services=["cds-1"]) == []
        left = store.find_units(cds_id="cds-1", states=[State.Pending], unbound=True)
        assert record_ids(left) == ["cu-labeled", "cu-machine", "cu-data"]

    def test_claims_from_two_services_merge_in_submission_order(self, store: CoordinationStore) -> None:
        """Units of several services are claimed oldest first across all of them."""
        store.insert_units([unit_record(f"cu-{n}", cds_id=f"cds-{n % 2}") for n in range(6)])
        claimed = store.claim_units("pilot-1", 4, services=["cds-1", "cds-0"])
        assert record_ids(claimed) == ["cu-0", "cu-1", "cu-2", "cu-3"]

    def test_constrained_finds_only_units_with_labels_or_input_data(self, store: CoordinationStore) -> None:
        """``constrained`` keeps units with an affinity label or input data."""
        store.insert_units([
            unit_record("cu-plain"),
            unit_record("cu-labeled", datacenter="eu"),
            unit_record("cu-data", input_data=["sqlite:///x#data-unit/du-1"]),
            unit_record("cu-bound", machine="m1", pilot_id="pilot-1"),
        ])
        queued = store.find_units(cds_id="cds-1", states=[State.Pending], unbound=True, constrained=True,
                                  fields=("id", "datacenter", "input_data"))
        assert queued == [{"id": "cu-labeled", "datacenter": "eu", "input_data": None},
                          {"id": "cu-data", "datacenter": None, "input_data": ["sqlite:///x#data-unit/du-1"]}]
        assert record_ids(store.find_units(constrained=True)) == ["cu-labeled", "cu-data", "cu-bound"]
        assert record_ids(store.find_units(cds_id="cds-1", states=[State.Pending], unbound=True, constrained=True,
                                     limit=1)) == ["cu-labeled"]

    def test_constrained_units_bound_by_policy_are_claimed(self, store: CoordinationStore) -> None:
        """A constrained unit an agent bound (the policy chose its pilot) is claimed with the
        units bound to the pilot."""
        store.insert_units([unit_record("cu-labeled", datacenter="eu"), unit_record("cu-plain")])
        assert store.bind_units([("cu-labeled", "pilot-1")]) == ["cu-labeled"]
        assert record_ids(store.claim_units("pilot-1", 5, services=["cds-1"])) == ["cu-labeled", "cu-plain"]

    def test_handing_back_chosen_units(self, store: CoordinationStore) -> None:
        """``unbind_units`` with ids hands back only those queued service units of the pilot;
        they can be claimed again, by any agent."""
        store.insert_units([unit_record(f"cu-{n}") for n in range(3)]
                           + [unit_record("cu-direct", cds_id=None, pilot_id="pilot-1")])
        assert record_ids(store.claim_units("pilot-1", 10, services=["cds-1"])) == ["cu-0", "cu-1", "cu-2", "cu-direct"]
        store.update_units([UnitUpdate("cu-2", {"state": State.Running})])
        assert sorted(store.unbind_units("pilot-1", ["cu-1", "cu-2", "cu-direct", "cu-missing"])) == ["cu-1"]
        assert store.unbind_units("pilot-2", ["cu-0"]) == []
        back = store.get_units(["cu-1"])[0]
        assert (back["pilot_id"], back["claimed"], back["state"]) == (None, False, "Pending")
        assert record_ids(store.claim_units("pilot-2", 10, services=["cds-1"])) == ["cu-1"]
        assert store.unbind_units("pilot-1", []) == []

    def test_a_claimed_unit_is_not_claimed_from_the_queue_again(self, store: CoordinationStore) -> None:
        """Two agents claiming from one queue never get the same unit."""
        store.insert_units([unit_record(f"cu-{n}") for n in range(10)])
        first = store.claim_units("pilot-1", 4, services=["cds-1"])
        second = store.claim_units("pilot-2", 10, services=["cds-1"])
        assert set(record_ids(first)) & set(record_ids(second)) == set()
        assert len(first) + len(second) == 10
        assert store.count_active(["pilot-1", "pilot-2"]) == {"pilot-1": 4, "pilot-2": 6}
