"""Fast tests of the scheduler's parts, with a real embedded store and no pilot process: the
placement round (``pilot.binding.choose``), an agent's claims, prefetch, give-back and care of
its peers (``pilot.agent.claims``), and the agent's handling of its slot workers' events."""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from pilot.agent.claims import CROWD_MAX, CROWD_PILOTS, HELD, PEERS_LOOKS, SERVICES_EVERY, SERVICES_RECHECK, Claimer
from pilot.agent.runner import Agent
from pilot.agent.units import RunningUnit, StartError
from pilot.binding import HOLD_SECONDS, PREFETCH_PER_SLOT, PREFETCH_SECONDS, capacity, choose, pilot_views
from pilot.plugin import hookimpl
from pilot.plugin.manager import PluginManager
from pilot.plugin.types import AgentResources, NodeSlots, PilotView
from pilot.session import Session
from pilot.states import Kind, State
from pilot.testing.fixtures import PilotEnv
from pilot.testing.records import pilot_record, unit_record

NOW = 1_000_000.0


class Ear:
    """Remembers every state change it hears."""

    def __init__(self) -> None:
        self.heard: list[tuple[Kind, str, State, State]] = []

    @hookimpl
    def pilot_state_changed(self, kind: Kind, entity_id: str, old: State, new: State) -> None:
        self.heard.append((kind, entity_id, old, new))


@pytest.fixture
def ear() -> Ear:
    return Ear()


@pytest.fixture
def session(ear: Ear) -> Iterator[Session]:
    session = Session(PluginManager(extra_plugins={"ear": ear}))
    yield session
    session.close()


@pytest.fixture
def store(session: Session, pilot_env: PilotEnv) -> Any:
    store = session.store(pilot_env.store_url)
    store.put_service("cds-1", "cds", {"placement": "agents"})
    store.put_service("pcs-1", "pcs", {})
    store.link("cds-1", "pcs-1")
    store.link("pcs-1", "cds-1")
    return store


def running_pilot(store: Any, pilot_id: str, slots: int = 1, **fields: Any) -> dict[str, Any]:
    record = pilot_record(pilot_id, **{"state": State.Running, "slots": slots, "heartbeat": time.time(),
                                       "datacenter": None, "machine": None, **fields})
    store.insert_pilot(record)
    return record


# --- the placement round -----------------------------------------------------------------------
def _views(*pilots: tuple[str, State, int, int, str | None]) -> list[PilotView]:
    return [PilotView(pid, state, slots, free, dc, None) for pid, state, slots, free, dc in pilots]


def test_choose_gives_units_to_pilots_with_room_until_all_are_full(session: Session, store: Any) -> None:
    units = [unit_record(f"cu-{n}") for n in range(5)]
    views = _views(("a", State.Running, 1, 2, None), ("b", State.Running, 1, 1, None), ("q", State.Pending, 8, 0, None))
    bindings, failed = choose(session, store, units, views)
    assert failed == []
    assert bindings == [("cu-0", "a"), ("cu-1", "a"), ("cu-2", "b")]  # most room first; then none left


def test_choose_keeps_a_labeled_unit_for_a_matching_pilot_still_queued(session: Session, store: Any) -> None:
    units = [unit_record("cu-eu", datacenter="eu"), unit_record("cu-mars", datacenter="mars"),
             unit_record("cu-big", slots=4)]
    views = _views(("us", State.Running, 2, 5, "us"), ("eu", State.Pending, 2, 0, "eu"))
    bindings, _ = choose(session, store, units, views)
    assert bindings == [("cu-mars", "us")]  # cu-eu waits for its pilot; cu-big fits no pilot


def test_choose_fails_a_unit_whose_input_data_can_never_be_stored(session: Session, store: Any) -> None:
    missing = f"{store.url}#data-unit/du-missing"
    bindings, failed = choose(session, store, [unit_record("cu-1", input_data=[missing])],
                              _views(("a", State.Running, 1, 2, None)))
    assert bindings == []
    assert [(f.id, f.new) for f in failed] == [("cu-1", State.Failed)]
    assert "du-missing" in failed[0].changes["reason"]


def test_pilot_views_show_room_of_running_pilots_only(store: Any) -> None:
    running_pilot(store, "pilot-r", slots=2)
    store.insert_pilot(pilot_record("pilot-q", state=State.Pending, slots=4))
    store.insert_units([unit_record("cu-1", pilot_id="pilot-r", state=State.Running, slots=2)])
    views = {v.id: v for v in pilot_views(store, store.find_pilots())}
    assert views["pilot-r"].free == capacity(2) - 2 == 2 * (1 + PREFETCH_PER_SLOT) - 2
    assert views["pilot-q"].free == 0


# --- an agent's claims -------------------------------------------------------------------------
def test_claimer_takes_plain_units_and_those_the_policy_gives_its_pilot(session: Session, store: Any) -> None:
    me = running_pilot(store, "pilot-me", datacenter="eu")
    running_pilot(store, "pilot-us", datacenter="us")
    store.insert_units([unit_record("cu-us", datacenter="us"), unit_record("cu-eu", datacenter="eu"),
                        unit_record("cu-plain"), unit_record("cu-huge", slots=9)])
    claimer = Claimer(session, store, me, total_slots=1)
    assert claimer.refresh_services(NOW) == ["cds-1"]
    claimed = claimer.claim(5, NOW)
    assert [r["id"] for r in claimed] == ["cu-eu", "cu-plain"]
    assert all(r[HELD] == NOW for r in claimed)
    left = store.find_units(cds_id="cds-1", unbound=True)
    assert [u["id"] for u in left] == ["cu-us", "cu-huge"]


def test_an_idle_claimer_asks_for_units_again_only_once_the_store_changed(session: Session, store: Any) -> None:
    me = running_pilot(store, "pilot-me")
    claimer = Claimer(session, store, me, total_slots=1)
    asked: list[int] = []
    claim_units = store.claim_units
    store.claim_units = lambda *args, **kwargs: asked.append(1) or claim_units(*args, **kwargs)
    assert claimer.claim(2, NOW) == []
    assert claimer.claim(2, NOW + 0.1) == []  # nothing written meanwhile: the store is not asked
    assert len(asked) == 1
    store.insert_units([unit_record("cu-1")])
    assert [r["id"] for r in claimer.claim(2, NOW + 0.2)] == ["cu-1"]
    assert len(asked) == 2


def test_a_service_linked_after_the_agent_started_is_served_at_once(session: Session, store: Any) -> None:
    me = running_pilot(store, "pilot-me")
    claimer = Claimer(session, store, me, total_slots=1)
    assert claimer.claim(2, NOW) == []  # its services read: cds-1, empty
    store.put_service("cds-2", "cds", {"placement": "agents"})  # made and linked after the agent started
    store.link("cds-2", "pcs-1")
    store.link("pcs-1", "cds-2")
    store.insert_units([unit_record("cu-1", cds_id="cds-2")])
    later = NOW + SERVICES_RECHECK  # long before SERVICES_EVERY: the store changed since the empty claim
    assert later < NOW + SERVICES_EVERY
    assert [r["id"] for r in claimer.claim(2, later)] == ["cu-1"]


def test_claimer_ignores_services_whose_client_places_units(session: Session, store: Any) -> None:
    store.put_service("cds-1", "cds", {"placement": "client"})
    me = running_pilot(store, "pilot-me")
    store.insert_units([unit_record("cu-1"), unit_record("cu-direct", cds_id=None, pilot_id="pilot-me")])
    claimer = Claimer(session, store, me, total_slots=1)
    assert [r["id"] for r in claimer.claim(5, NOW)] == ["cu-direct"]


def test_prefetch_follows_the_start_rate_within_its_bounds(session: Session, store: Any) -> None:
    claimer = Claimer(session, store, running_pilot(store, "pilot-me", slots=2), total_slots=2)
    start = claimer._rate_at
    assert claimer.prefetch(start) == 2  # nothing started yet: one per slot
    claimer.count_started(40)  # 40 starts in 0.2 s: 200 /s
    assert claimer.prefetch(start + 0.2) == max(2, math.ceil(0.5 * 200 * PREFETCH_SECONDS))  # 100 /s smoothed
    claimer.count_started(100_000)
    assert claimer.prefetch(start + 0.4) == 2 * PREFETCH_PER_SLOT


def test_a_crowd_of_running_peers_stretches_the_prefetch_and_others_do_not(session: Session, store: Any) -> None:
    me = running_pilot(store, "pilot-me")
    claimer = Claimer(session, store, me, total_slots=1)
    claimer.refresh_services(NOW)
    for n in range(int(2 * PEERS_LOOKS)):  # ended pilots of the service, and queued ones: no crowd
        running_pilot(store, f"pilot-ended-{n}", state=State.Done, finished=time.time())
        running_pilot(store, f"pilot-queued-{n}", state=State.Pending)
    claimer.look_after_peers(time.monotonic() + 60)
    start = claimer._rate_at
    claimer.count_started(20)  # 20 starts in 0.2 s: 100 /s, 50 /s smoothed
    alone = claimer.prefetch(start + 0.2)
    assert (claimer.crowd, alone) == (1.0, math.ceil(50 * PREFETCH_SECONDS))
    for n in range(int(3 * CROWD_PILOTS) - 1):  # 3 x CROWD_PILOTS live pilots in all
        running_pilot(store, f"pilot-peer-{n}")
    claimer.look_after_peers(time.monotonic() + 600)
    assert claimer.crowd == 3.0
    claimer.count_started(10)  # 50 /s again: the rate holds, the prefetch triples
    assert claimer.prefetch(start + 0.4) == math.ceil(50 * PREFETCH_SECONDS * 3.0)
    for n in range(int(CROWD_MAX * CROWD_PILOTS)):
        running_pilot(store, f"pilot-more-{n}")
    claimer.look_after_peers(time.monotonic() + 6000)
    assert claimer.crowd == CROWD_MAX  # bounded: a crowd never stretches the batches further


def test_units_held_too_long_go_back_to_the_queue(session: Session, store: Any) -> None:
    me = running_pilot(store, "pilot-me")
    store.insert_units([unit_record("cu-1"), unit_record("cu-2"), unit_record("cu-direct", cds_id=None,
                                                                               pilot_id="pilot-me")])
    claimer = Claimer(session, store, me, total_slots=1)
    claimed = claimer.claim(3, NOW)
    assert claimer.overdue(claimed, NOW + HOLD_SECONDS / 2) == []
    overdue = claimer.overdue(claimed, NOW + HOLD_SECONDS + 0.1)
    assert [r["id"] for r in overdue] == ["cu-1", "cu-2"]  # a direct unit stays with its pilot
    assert claimer.give_back(overdue) == ["cu-1", "cu-2"]
    assert [u["id"] for u in store.find_units(cds_id="cds-1", unbound=True)] == ["cu-1", "cu-2"]


def test_a_crowded_agent_holds_units_as_long_as_its_prefetch_lasts(session: Session, store: Any) -> None:
    """Among many pilots an agent prefetches up to PREFETCH_SECONDS x crowd of work, so it keeps
    a claimed unit twice that long before handing it back (not HOLD_SECONDS, which it would
    pass on time); alone, it hands back after HOLD_SECONDS."""
    me = running_pilot(store, "pilot-me")
    store.insert_units([unit_record("cu-1")])
    claimer = Claimer(session, store, me, total_slots=1)
    claimed = claimer.claim(1, NOW)
    claimer.crowd = CROWD_MAX
    hold = 2 * PREFETCH_SECONDS * CROWD_MAX
    assert hold > HOLD_SECONDS
    assert claimer.overdue(claimed, NOW + HOLD_SECONDS + 0.1) == []
    assert claimer.overdue(claimed, NOW + hold + 0.1) == claimed
    claimer.crowd = 1.0
    assert claimer.overdue(claimed, NOW + HOLD_SECONDS + 0.1) == claimed


def test_an_agent_fails_a_silent_peer_and_requeues_its_units(session: Session, store: Any, ear: Ear) -> None:
    me = running_pilot(store, "pilot-me")
    running_pilot(store, "pilot-dead", heartbeat_timeout=2.0)
    store.update_pilot("pilot-dead", {"heartbeat": time.time() - 10})
    store.insert_units([unit_record("cu-held", pilot_id="pilot-dead"),
                        unit_record("cu-ran", pilot_id="pilot-dead", state=State.Running),
                        unit_record("cu-again", pilot_id="pilot-dead", state=State.Running,
                                    description={"executable": "/bin/true", "restartable": True})])
    store.claim_units("pilot-dead", 1)
    claimer = Claimer(session, store, me, total_slots=1)
    claimer.refresh_services(NOW)
    claimer.look_after_peers(time.monotonic() + 60)
    dead = store.get_pilots(["pilot-dead"])[0]
    assert (dead["state"], dead["reason"].startswith("agent silent")) == ("Failed", True)
    units = {u["id"]: u for u in store.get_units(["cu-held", "cu-ran", "cu-again"])}
    assert (units["cu-held"]["state"], units["cu-held"]["pilot_id"]) == ("Pending", None)
    assert units["cu-ran"]["state"] == "Failed"
    assert (units["cu-again"]["state"], units["cu-again"]["pilot_id"], units["cu-again"]["attempts"]) == \
        ("Pending", None, 1)
    assert (Kind.pilot, "pilot-dead", State.Running, State.Failed) in ear.heard
    assert (Kind.unit, "cu-again", State.Running, State.Pending) in ear.heard


def test_units_left_claimed_by_an_ended_pilot_come_back_when_its_lease_ran_out(session: Session, store: Any) -> None:
    me = running_pilot(store, "pilot-me")
    running_pilot(store, "pilot-gone", heartbeat_timeout=60.0)
    store.insert_units([unit_record("cu-1", pilot_id="pilot-gone")])
    store.claim_units("pilot-gone", 1)
    store.update_pilot("pilot-gone", {"state": State.Canceled, "finished": time.time()})
    claimer = Claimer(session, store, me, total_slots=1)
    claimer.refresh_services(NOW)
    claimer.look_after_peers(time.monotonic() + 60)
    assert store.get_units(["cu-1"])[0]["pilot_id"] == "pilot-gone"  # its agent may still start it
    store.update_pilot("pilot-gone", {"heartbeat": time.time() - 31})
    claimer.look_after_peers(time.monotonic() + 120)
    assert store.get_units(["cu-1"])[0]["pilot_id"] is None


# --- the agent's event handling ----------------------------------------------------------------
class Group:
    """Stands in for a unit's process group: records the signals the agent sends."""

    def __init__(self) -> None:
        self.signals: list[int] = []

    def signal_group(self, signum: int) -> None:
        self.signals.append(signum)


@pytest.fixture
def agent(session: Session, store: Any) -> Iterator[Agent]:
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    pilot = running_pilot(store, "pilot-me", slots=2)
    agent = Agent(session, store, pilot, AgentResources((NodeSlots("h", 2),), local_host="h"))
    yield agent
    agent.workers.stop(1.0)
    signal.set_wakeup_fd(-1)
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def _unit(unit_id: str) -> RunningUnit:
    return RunningUnit(unit_id, Group(), ["h"])  # type: ignore[arg-type]


def _events(agent: Agent, events: Sequence[tuple[Any, ...]]) -> None:
    for event in events:
        agent.workers.events.put(event)
    agent.handle_events()
    agent.flush()


def test_a_start_and_an_end_in_one_flush_are_one_write(agent: Agent, store: Any, ear: Ear) -> None:
    store.insert_units([unit_record("cu-1"), unit_record("cu-2")])
    store.claim_units("pilot-me", 2, services=["cds-1"])
    _events(agent, [("started", _unit("cu-1"), 1.0, "/sb/cu-1"), ("ended", _unit("cu-1"), 0, 2.0),
                    ("started", _unit("cu-2"), 1.0, "/sb/cu-2")])
    _events(agent, [("ended", _unit("cu-2"), 3, 4.0)])
    got = {u["id"]: u for u in store.get_units(["cu-1", "cu-2"])}
    assert (got["cu-1"]["state"], got["cu-1"]["exit_code"], got["cu-1"]["sandbox"]) == ("Done", 0, "/sb/cu-1")
    assert (got["cu-2"]["state"], got["cu-2"]["exit_code"]) == ("Failed", 3)
    units_heard = [h for h in ear.heard if h[0] is Kind.unit]
    assert units_heard == [(Kind.unit, "cu-1", State.Pending, State.Done),
                           (Kind.unit, "cu-2", State.Pending, State.Running),
                           (Kind.unit, "cu-2", State.Running, State.Failed)]


def test_a_start_and_its_output_staging_in_one_flush_after_input_staging_are_written(
        agent: Agent, store: Any, ear: Ear) -> None:
    """Input staging written, then the start and the output staging merged into one write: the
    store sees Staging -> Staging (Running collapsed) and takes it, start time and staging_out
    included, so the unit's timeline keeps both."""
    store.insert_units([unit_record("cu-1")])
    [record] = store.claim_units("pilot-me", 1, services=["cds-1"])
    unit = _unit("cu-1")
    _events(agent, [("staging", record, "h", 1.0, "/sb")])
    _events(agent, [("started", unit, 2.0, "/sb"), ("staging-out", unit, 3.0)])
    _events(agent, [("ended", unit, 0, 4.0)])
    got = store.get_units(["cu-1"])[0]
    assert (got["state"], got["staging_in"], got["started"], got["staging_out"], got["finished"]) == \
        ("Done", 1.0, 2.0, 3.0, 4.0)
    assert [h[2:] for h in ear.heard if h[0] is Kind.unit] == [
        (State.Pending, State.Staging), (State.Staging, State.Staging), (State.Staging, State.Done)]


def test_a_unit_changed_under_the_agent_is_stopped_silently(agent: Agent, store: Any, ear: Ear) -> None:
    store.insert_units([unit_record("cu-1")])
    store.claim_units("pilot-me", 1, services=["cds-1"])
    from pilot.lifecycle import cancel_units

    cancel_units(store, ["cu-1"])
    unit = _unit("cu-1")
    agent.workers.running["cu-1"] = unit
    _events(agent, [("started", unit, 1.0, "/sb")])
    assert unit.proc.signals == [signal.SIGTERM]  # type: ignore[attr-defined]
    assert unit.silent
    assert store.get_units(["cu-1"])[0]["state"] == "Canceled"
    assert [h for h in ear.heard if h[0] is Kind.unit] == []


def test_a_unit_that_cannot_start_fails_with_the_reason(agent: Agent, store: Any) -> None:
    store.insert_units([unit_record("cu-1")])
    [record] = store.claim_units("pilot-me", 1, services=["cds-1"])
    _events(agent, [("failed", record, "h", "/sb", StartError("no such file: /bin/nope"), 1.0)])
    got = store.get_units(["cu-1"])[0]
    assert (got["state"], got["reason"]) == ("Failed", "no such file: /bin/nope")


def _ready_to_step(agent: Agent, crowd: float) -> None:
    """The loop's timers as ``run`` sets them, a flush just done, no heartbeat due, in a crowd."""
    now = time.monotonic()
    agent.next_heartbeat, agent.next_control, agent.next_claim = now + 600, now + 600, now
    agent.idle, agent.last_flush = 0.002, now
    agent.claimer.crowd = crowd
    agent.claimer._peers_at = now + 600


def test_an_idle_agent_writes_a_final_state_at_once_and_a_busy_one_batches(agent: Agent, store: Any) -> None:
    """Among many pilots an agent batches state writes for up to FLUSH_EVERY x crowd; once it
    has nothing running or queued, no change would join the batch, so the end of its last unit
    is written in the same round of its loop (a wait() returns without the pause)."""
    store.insert_units([unit_record("cu-1"), unit_record("cu-2")])
    store.claim_units("pilot-me", 2, services=["cds-1"])
    _ready_to_step(agent, CROWD_MAX)
    agent.workers.running["cu-2"] = _unit("cu-2")  # still running: the end of cu-1 waits for the batch
    agent.workers.events.put(("ended", _unit("cu-1"), 0, 2.0))
    agent.step()
    assert store.get_units(["cu-1"])[0]["state"] == "Pending"
    del agent.workers.running["cu-2"]  # nothing left: the next round writes both
    agent.workers.events.put(("ended", _unit("cu-2"), 0, 3.0))
    _ready_to_step(agent, CROWD_MAX)
    agent.step()
    assert [u["state"] for u in store.get_units(["cu-1", "cu-2"])] == ["Done", "Done"]


def test_an_idle_agent_in_a_crowd_asks_the_store_less_often(agent: Agent) -> None:
    """An agent whose claims find nothing backs off to IDLE_MAX between two looks, stretched by
    the crowd of pilots sharing the store (each look costs the store a transaction)."""
    from pilot.agent.runner import IDLE_MAX

    for crowd in (1.0, 4.0):
        _ready_to_step(agent, crowd)
        agent.idle = IDLE_MAX
        agent.step()
        assert agent.idle == pytest.approx(IDLE_MAX * min(2.0, crowd))


def test_events_read_while_taking_units_back_are_handled_without_a_pause(agent: Agent, store: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Taking units back from the native spawner reads its events in the same round (a unit it
    started meanwhile): no wake-up follows, so the loop goes round again at once instead of
    sleeping up to a second with a unit's end unwritten."""
    store.insert_units([unit_record("cu-1")])
    store.claim_units("pilot-me", 1, services=["cds-1"])
    _ready_to_step(agent, CROWD_MAX)
    waits: list[float] = []
    monkeypatch.setattr(agent, "wait", waits.append)
    real_chores = agent.claimer_chores

    def chores_reading_events(now: float) -> None:  # as NativeSlots.take_back does
        agent.workers.events.put(("started", _unit("cu-1"), 1.0, "/sb/cu-1"))
        agent.workers.events.put(("ended", _unit("cu-1"), 0, 2.0))
        monkeypatch.setattr(agent, "claimer_chores", real_chores)

    monkeypatch.setattr(agent, "claimer_chores", chores_reading_events)
    agent.step()
    assert waits == []  # no sleep with events queued
    agent.step()
    assert store.get_units(["cu-1"])[0]["state"] == "Done"
