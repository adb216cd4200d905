"""ComputeDataService: the workload's entry point. Units submitted here wait in the service's
queue in the coordination store; the agents of its running pilots claim them as their slots free
up (late binding, see ``pilot.binding``), so units do not depend on the submitting process.
When this process's session has a placement policy of its own, this process binds the units
instead, in a background thread, under the same rules."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pilot import urls
from pilot.binding import QUEUE_FIELDS, capacity, choose, custom_policy, pcs_of, pilot_views
from pilot.compute import (
    ComputeUnit,
    PilotComputeService,
    new_id,
    poll_until,
    unit_records,
)
from pilot.descriptions import ComputeUnitDescription, DataUnitDescription
from pilot.errors import PilotError, StoreClosed
from pilot.handles import UrlIdentity, open_url
from pilot.lifecycle import cancel_units, refresh_pilot, release_orphans
from pilot.log import get_logger
from pilot.session import Session, default_session
from pilot.states import ACTIVE_UNIT_STATES, LIVE_PILOT_STATES, Kind, State
from pilot.store import CoordinationStore, Record
from pilot.timeouts import check_timeout
from pilot.transitions import change_units, transition

#: Units validated and written per store round trip by ``submit_compute_units``.
SUBMIT_BATCH = 10_000

if TYPE_CHECKING:
    from pilot.data.objects import DataUnit, PilotData, PilotDataService

#: Seconds between two placement rounds of a client-side placer while units are being bound.
PLACE_EVERY = 0.02
_WAIT_FIELDS = ("id", "pilot_id", "state", "slots")
_DU_BUSY = (State.New.value, State.Pending.value)  # a data unit still being stored


def live_pilots(store: CoordinationStore, cds_id: str, session: Session | None = None) -> list[Record]:
    """The live pilots of the service's pilot compute services (refreshed when a session is
    given, so dead ones are found and the units their agents left are given back)."""
    pilots = store.pilots_of(pcs_of(store, cds_id))
    if session is not None:
        pilots = [refresh_pilot(session, store, p) for p in pilots]
        release_orphans(session, store, pilots)
    return [p for p in pilots if State(p["state"]) in LIVE_PILOT_STATES]


def unrunnable_reason(store: CoordinationStore, cds_id: str, units: Sequence[Record]) -> str | None:
    """Why queued ``units`` of the service can never run, or None while some pilot could."""
    queued = [u for u in units if u.get("pilot_id") is None and State(u["state"]) in (State.New, State.Pending)]
    if not queued:
        return None
    live = live_pilots(store, cds_id)
    if not live:
        return "no pilot of the service is alive (none was added, or all have ended)"
    largest = max(int(p.get("slots") or 0) for p in live)
    too_big = [u for u in queued if int(u["slots"]) > largest]
    if too_big:
        return f"{too_big[0]['id']} needs {too_big[0]['slots']} slots; the largest live pilot has {largest}"
    return None


class ComputeDataService(UrlIdentity):
    """Places compute units on the pilots of its services. Reconnect with ``cds_url``.

    Its store is the one of ``cds_url`` or ``coordination_url`` when given; made without either,
    it takes the store of the first service added to it (BigJob's rule), or the default store
    when it is first needed before that (``submit_*``, ``get_url()``). Services on another store
    are refused after that."""

    def __init__(self, cds_url: str | None = None, *, coordination_url: str | None = None,
                 session: Session | None = None) -> None:
        self._bound: CoordinationStore | None = None  # the store, once fixed
        self._bind_lock = threading.Lock()
        if cds_url is not None:
            self._session, store, self.id = open_url(cds_url, "cds", session)
            record = store.get_service(self.id)
            if record is None or record["kind"] != "cds":
                raise PilotError(f"no compute data service {self.id} in {store.url}")
            self._bound = store
            placement = record["data"].get("placement")
        else:
            self._session = session or default_session()
            self.id = new_id("cds")
            placement = "client" if custom_policy(self._session) else "agents"
        #: Who binds this service's units: its pilots' agents, or this process (its own policy).
        self.placement: str = placement or "agents"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._placer: threading.Thread | None = None
        self._placer_lock = threading.Lock()
        self._log = get_logger(cds=self.id)
        if coordination_url is not None and cds_url is None:
            self._bind(self._session.store(coordination_url))
        elif self._bound is not None and self._bound.children(self.id):
            self._start_placer()

    def __repr__(self) -> str:
        return f"<ComputeDataService {self.id}>"

    def _bind(self, store: CoordinationStore) -> CoordinationStore:
        """Fix this service's store to ``store`` (writing its record there) unless it is fixed
        already; the store."""
        with self._bind_lock:
            if self._bound is None:
                store.put_service(self.id, "cds", {"placement": self.placement})
                self._bound = store
            return self._bound

    @property
    def _store(self) -> CoordinationStore:
        """The service's store; fixed to the default store here if no service fixed it before."""
        return self._bound if self._bound is not None else self._bind(self._session.store())

    def _same_store(self, service: PilotComputeService | PilotDataService) -> None:
        store = self._bind(service._store)
        if service._store.url != store.url:
            raise PilotError(f"{service!r} uses store {service._store.url}, this service {store.url} (a "
                             "ComputeDataService uses one store: its URL's, else that of the first service added)")

    def get_url(self) -> str:
        """The URL that reconnects to this service, its pilot services and its units."""
        return urls.make(self._store.url, "cds", self.id)

    # --- services ---------------------------------------------------------------------------
    def add_pilot_compute_service(self, pcs: PilotComputeService) -> None:
        """Add a pilot compute service: its pilots (now and later) run this service's units."""
        self._same_store(pcs)
        self._store.link(self.id, pcs.id)
        self._store.link(pcs.id, self.id)  # the agents of its pilots find this service's queue
        self._start_placer()
        self._wake.set()

    def remove_pilot_compute_service(self, pcs: PilotComputeService) -> None:
        """Stop placing units on ``pcs``'s pilots (units already bound there stay)."""
        if self._bound is not None:
            self._bound.unlink(self.id, pcs.id)
            self._bound.unlink(pcs.id, self.id)

    def _children(self, prefix: str) -> list[str]:
        """Ids linked under this service that start with ``prefix`` (none before its store is fixed)."""
        return [] if self._bound is None else [c for c in self._bound.children(self.id) if c.startswith(prefix)]

    def list_pilot_compute_services(self) -> list[PilotComputeService]:
        """The pilot compute services of this service."""
        return [PilotComputeService(pcs_url=urls.make(self._store.url, "pcs", pcs_id), session=self._session)
                for pcs_id in self._children("pcs-")]

    # --- data -------------------------------------------------------------------------------
    def add_pilot_data_service(self, pds: PilotDataService) -> None:
        """Add a pilot data service: its PilotData hold this service's data units."""
        self._same_store(pds)
        self._store.link(self.id, pds.id)

    def remove_pilot_data_service(self, pds: PilotDataService) -> None:
        """Stop placing data units in ``pds``'s PilotData (stored data stays)."""
        if self._bound is not None:
            self._bound.unlink(self.id, pds.id)

    def list_pilot_data_services(self) -> list[PilotDataService]:
        """The pilot data services of this service."""
        from pilot.data.objects import PilotDataService

        return [PilotDataService(pds_url=urls.make(self._store.url, "pds", pds_id), session=self._session)
                for pds_id in self._children("pds-")]

    def list_pilot_data(self) -> list[PilotData]:
        """The PilotData of this service's pilot data services (they compare equal to their URLs)."""
        from pilot.data.objects import PilotData

        return [PilotData(session=self._session, _store=self._store, _id=pd)
                for pds in self._children("pds-") for pd in self._store.children(pds)]

    def submit_data_unit(self, data_unit_description: Mapping[str, Any] | DataUnitDescription) -> DataUnit:
        """Store a data unit in a PilotData of this service chosen by its labels (see
        ``pilot.data.placement``), and in as many more as its ``number_of_replicas`` asks;
        returns at once, ``du.wait()`` waits for the transfers."""
        from pilot.data.placement import choose_pilot_data, replica_targets

        desc = DataUnitDescription.from_dict(data_unit_description)
        store = self._store
        pds_ids = self._children("pds-")
        pd = choose_pilot_data(self._session, store, pds_ids, desc)
        more = replica_targets(self._session, store, pds_ids, desc, pd.id,
                               default=(pd.get_details().get("description") or {}).get("number_of_replicas"))
        du: DataUnit = pd.submit_data_unit(desc, replicate=False)
        for other in more:
            other.submit_data_unit(data_unit=du)
        store.link(self.id, du.id)
        return du

    def list_data_units(self) -> list[DataUnit]:
        """Every data unit submitted to this service (they compare equal to their URLs)."""
        from pilot.data.objects import DataUnit

        return [DataUnit(session=self._session, _store=self._store, _id=du) for du in self._children("du-")]

    def get_data_unit(self, du_url: str) -> DataUnit | None:
        """A data unit submitted to this service, by URL (or id); None when it is not one."""
        from pilot.data.objects import DataUnit

        du_id = du_url if "#" not in du_url else urls.parse(du_url, "data-unit").id
        if du_id not in self._children("du-"):
            return None
        return DataUnit(session=self._session, _store=self._store, _id=du_id)

    # --- units ------------------------------------------------------------------------------
    def submit_compute_unit(self, compute_unit_description: Mapping[str, Any] | ComputeUnitDescription
                            ) -> ComputeUnit:
        """Queue one unit in this service."""
        return self.submit_compute_units([compute_unit_description])[0]

    def submit_compute_units(self, compute_unit_descriptions: Iterable[Mapping[str, Any] | ComputeUnitDescription]
                             ) -> list[ComputeUnit]:
        """Queue many units: any iterable (a generator of a million descriptions is never held
        whole), validated and written in batches of ``SUBMIT_BATCH`` (one store round trip each).
        A batch is all or nothing: up to ``SUBMIT_BATCH`` units nothing is queued unless every
        description is valid. An invalid description in a later batch stops the submission, and
        the units this call queued before it are canceled (the error says how many). A unit
        larger than every live pilot, or one with placement constraints when no placement
        policy is loaded, fails at once with the reason. The handles returned are light (an id
        and the store; state is read on demand)."""
        import gc
        import itertools

        store = self._store
        handles: list[ComputeUnit] = []
        descriptions = iter(compute_unit_descriptions)
        paused = gc.isenabled()
        gc.disable()  # the records of a batch make no cycles; a full collection per batch would
        try:          # walk every handle made so far
            while batch := list(itertools.islice(descriptions, SUBMIT_BATCH)):
                try:
                    records = unit_records(batch, cds_id=self.id, first_index=len(handles))
                except PilotError as exc:
                    if handles:
                        ids = [h.id for h in handles]
                        transition(store, Kind.unit, ids, State.Canceled,
                                   {"finished": time.time(), "reason": f"submission stopped: {exc}"},
                                   session=self._session, only_from=[State.Pending])
                        cancel_units(store, ids, self._session)  # any that started meanwhile
                        raise PilotError(f"{exc}; the {len(handles)} units queued before it by this call were "
                                         "canceled", key=exc.key) from None
                    raise
                self._refuse_unrunnable(store, records)
                store.insert_units(records)
                handles += [ComputeUnit(session=self._session, _store=store, _id=r["id"]) for r in records]
                self._start_placer()
                self._wake.set()
        finally:
            if paused:
                gc.enable()
        return handles

    def _refuse_unrunnable(self, store: CoordinationStore, records: list[Record]) -> None:
        """Fail, before they are queued, units larger than every live pilot and units with
        placement constraints when no placement policy is loaded."""
        live = live_pilots(store, self.id)
        if live:
            largest = max(int(p.get("slots") or 0) for p in live)
            for rec in records:
                if rec["slots"] > largest:
                    rec.update(state=State.Failed, finished=time.time(),
                               reason=f"needs {rec['slots']} slots; the largest pilot of the service has {largest}")
        if not self._session.plugins.implementers("pilot_place_unit"):
            for rec in records:
                constrained = rec.get("datacenter") or rec.get("machine") or rec.get("input_data")
                if constrained and rec["state"] != State.Failed:
                    rec.update(state=State.Failed, finished=time.time(), reason=(
                        "has an affinity label or input data, but no placement policy is loaded to place it"
                        f"{self._session.plugins.blocked_hint()}"))

    def list_compute_units(self) -> list[ComputeUnit]:
        """Every unit submitted to this service (they compare equal to their URLs)."""
        if self._bound is None:
            return []
        return [ComputeUnit(session=self._session, _store=self._bound, _id=u["id"])
                for u in self._bound.find_units(cds_id=self.id)]

    # --- state ------------------------------------------------------------------------------
    def _pending_data_units(self, du_ids: Sequence[str]) -> list[str]:
        """Those of ``du_ids`` still being stored (New or Pending)."""
        return [r["id"] for r in self._store.get_services(du_ids) if r["data"].get("state") in _DU_BUSY]

    def get_state(self) -> State:
        """``New`` until work is submitted, ``Running`` while a unit is unfinished or a data unit
        is being stored, ``Done`` when all have ended (``Running`` again on new work),
        ``Canceled`` after ``cancel()``."""
        if self._bound is None:
            return State.New
        record = self._bound.get_service(self.id)
        if record is not None and record["data"].get("canceled"):
            return State.Canceled
        if self._bound.find_units(cds_id=self.id, states=ACTIVE_UNIT_STATES, limit=1, fields=("id",)):
            return State.Running
        dus = self._children("du-")
        if self._pending_data_units(dus):
            return State.Running
        if dus or self._bound.find_units(cds_id=self.id, limit=1, fields=("id",)):
            return State.Done
        return State.New

    def get_details(self) -> dict[str, Any]:
        """Id, URL, state, placement, the URLs of its services, pilots, PilotData and data units,
        and its compute units counted by state."""
        store = self._store
        pcs_ids = self._children("pcs-")
        counts: dict[str, int] = {}
        for unit in store.find_units(cds_id=self.id, fields=("state",)):
            counts[unit["state"]] = counts.get(unit["state"], 0) + 1
        return {
            "id": self.id, "url": self.get_url(), "state": self.get_state(), "placement": self.placement,
            "pilot_compute_services": [urls.make(store.url, "pcs", i) for i in pcs_ids],
            "pilot_data_services": [urls.make(store.url, "pds", i) for i in self._children("pds-")],
            "pilots": [urls.make(store.url, "pilot", p["id"]) for p in store.pilots_of(pcs_ids)],
            "pilot_data": [pd.get_url() for pd in self.list_pilot_data()],
            "data_units": [urls.make(store.url, "data-unit", i) for i in self._children("du-")],
            "compute_units": counts,
        }

    def get_timeline(self) -> list[dict[str, Any]]:
        """One row per unit of this service: its pilot, slot, state, command and when it was
        submitted, staged in, started, staged out and finished (``pilot.timeline``)."""
        from pilot.timeline.data import timeline_of

        return timeline_of(self._store, cds_id=self.id).rows

    def wait(self, timeout: float | None = None, progress: bool | None = None) -> None:
        """Wait until every compute unit of this service is final and every data unit is stored
        (``Running``) or final. Raises ``PilotError`` naming the units when queued units can
        never run, ``TimeoutError`` after ``timeout`` s. ``progress``: show the progress display
        (default: when standard error is a terminal; see ``pilot.progress``)."""
        from pilot.progress import shown, wanted

        timeout = check_timeout(timeout)
        show = wanted(progress)
        if self._bound is None:
            return  # nothing was ever submitted
        store = self._bound
        self._start_placer()
        checked = [0.0]
        units_done = [False]
        data_units = self._children("du-")

        def units_final() -> bool:
            check = time.monotonic() - checked[0] > 0.5
            # units still queued in the service come from the index in order; only when there are
            # none does it list the active units (a listing the store must sort)
            active = store.find_units(cds_id=self.id, states=[State.Pending], unbound=True,
                                      limit=100 if check else 1, fields=_WAIT_FIELDS)
            if active and not check:
                return False
            if not active:
                active = store.find_units(cds_id=self.id, states=ACTIVE_UNIT_STATES, limit=100, fields=_WAIT_FIELDS)
                if not active:
                    return True
            if check:
                checked[0] = time.monotonic()
                live_pilots(store, self.id, self._session)  # finds dead pilots
                reason = unrunnable_reason(store, self.id, active)
                if reason:
                    stuck = [u["id"] for u in active if u.get("pilot_id") is None]
                    shown = ", ".join(stuck[:10]) + (f" and {len(stuck) - 10} more" if len(stuck) > 10 else "")
                    raise PilotError(f"{len(stuck)} queued units can never run ({shown}): {reason}")
            return False

        def all_final() -> bool | None:
            units_done[0] = units_done[0] or units_final()
            if not units_done[0]:
                return None
            if data_units:
                data_units[:] = self._pending_data_units(data_units)
            return None if data_units else True

        try:
            with shown(lambda: store.count_units(cds_id=self.id), f"units of {self.id[:12]}", show):
                poll_until(all_final, timeout, f"the units of {self.id}", store)
        except KeyboardInterrupt:  # the work outlives this process: say so, once the display is closed
            self._log.warning("wait interrupted: the units and pilots keep running; `pilot status` shows "
                              "them, ComputeDataService(cds_url=...).cancel() or `pilot pilots cancel URL` "
                              "stops them", cds_url=self.get_url())
            raise

    def cancel(self) -> None:
        """Cancel this service's unfinished units and the pilots of its services."""
        self._stop.set()
        self._wake.set()
        store = self._bound
        if store is None:
            return  # nothing was ever submitted or added
        store.update_service(self.id, {"canceled": time.time()})  # its state is derived: see get_state
        active = store.find_units(cds_id=self.id, states=ACTIVE_UNIT_STATES, fields=("id",))
        cancel_units(store, [u["id"] for u in active], self._session)
        for pcs in self.list_pilot_compute_services():
            pcs.cancel()

    # --- placement (only where this process's session has a policy of its own) ----------------
    def _start_placer(self) -> None:
        if self.placement != "client" or self._bound is None:
            return
        with self._placer_lock:
            if self._stop.is_set() or (self._placer is not None and self._placer.is_alive()):
                return
            self._placer = threading.Thread(target=self._place_loop, name=f"pilot-placer-{self.id}", daemon=True)
            self._placer.start()

    def _place_loop(self) -> None:
        delay = PLACE_EVERY
        while not self._stop.is_set():
            try:
                placed, waiting = self.place_once()
            except StoreClosed:
                return  # the session that owns the store ended
            except Exception:
                self._log.exception("placement failed; retrying")
                placed, waiting = 0, True
            delay = PLACE_EVERY if placed else (0.025 if waiting else min(delay * 2, 1.0))
            self._wake.wait(delay)
            self._wake.clear()

    def place_once(self) -> tuple[int, bool]:
        """Bind queued units to running pilots with room, once, asking this session's policy.
        Returns (units bound, whether units are still waiting)."""
        pilots = live_pilots(self._store, self.id, self._session)
        views = pilot_views(self._store, pilots)
        room = sum(max(0, v.free) for v in views)
        if room <= 0:
            return 0, bool(self._store.find_units(cds_id=self.id, states=[State.Pending], unbound=True, limit=1,
                                                  fields=("id",)))
        queued = self._store.find_units(cds_id=self.id, states=[State.Pending], unbound=True,
                                        limit=min(room, sum(capacity(v.slots) for v in views)) + 64,
                                        fields=QUEUE_FIELDS)
        bindings, failed = choose(self._session, self._store, queued, views)
        change_units(self._store, failed, self._session)
        bound = self._store.bind_units(bindings) if bindings else []
        return len(bound), len(queued) > len(bound)


#: BigJob's two ComputeDataService implementations are this one.
ComputeDataServiceDecentral = ComputeDataService
ComputeDataServiceCentral = ComputeDataService
