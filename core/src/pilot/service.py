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
from pilot.handles import open_url
from pilot.lifecycle import cancel_units, refresh_pilot, release_orphans
from pilot.log import get_logger
from pilot.session import Session, default_session
from pilot.states import ACTIVE_UNIT_STATES, LIVE_PILOT_STATES, State
from pilot.store import Record
from pilot.transitions import change_units

if TYPE_CHECKING:
    from pilot.data.objects import DataUnit, PilotDataService

#: Seconds between two placement rounds of a client-side placer while units are being bound.
PLACE_EVERY = 0.02
_WAIT_FIELDS = ("id", "pilot_id", "state", "slots")


def pcs_children(store: Any, cds_id: str) -> list[str]:
    """The pilot compute services linked under a ComputeDataService (it also links its pilot
    data services and data units)."""
    return pcs_of(store, cds_id)


def live_pilots(store: Any, cds_id: str, session: Any | None = None) -> list[Record]:
    """The live pilots of the service's pilot compute services (refreshed when a session is
    given, so dead ones are found and the units their agents left are given back)."""
    pilots = store.pilots_of(pcs_children(store, cds_id))
    if session is not None:
        pilots = [refresh_pilot(session, store, p) for p in pilots]
        release_orphans(session, store, pilots)
    return [p for p in pilots if State(p["state"]) in LIVE_PILOT_STATES]


def unrunnable_reason(store: Any, cds_id: str, units: Sequence[Record]) -> str | None:
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


class ComputeDataService:
    """Places compute units on the pilots of its services. Reconnect with ``cds_url``."""

    def __init__(self, cds_url: str | None = None, *, coordination_url: str | None = None,
                 session: Session | None = None) -> None:
        if cds_url is not None:
            self._session, self._store, self.id = open_url(cds_url, "cds", session)
            record = self._store.get_service(self.id)
            if record is None or record["kind"] != "cds":
                raise PilotError(f"no compute data service {self.id} in {self._store.url}")
        else:
            self._session = session or default_session()
            self._store = self._session.store(coordination_url)
            self.id = new_id("cds")
            record = {"kind": "cds", "data": {"placement": "client" if custom_policy(self._session) else "agents"}}
            self._store.put_service(self.id, "cds", record["data"])
        #: Who binds this service's units: its pilots' agents, or this process (its own policy).
        self.placement: str = record["data"].get("placement") or "agents"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._placer: threading.Thread | None = None
        self._placer_lock = threading.Lock()
        self._log = get_logger(cds=self.id)
        if self._store.children(self.id):
            self._start_placer()

    def __repr__(self) -> str:
        return f"<ComputeDataService {self.id}>"

    def get_url(self) -> str:
        """The URL that reconnects to this service, its pilot services and its units."""
        return urls.make(self._store.url, "cds", self.id)

    # --- services ---------------------------------------------------------------------------
    def add_pilot_compute_service(self, pcs: PilotComputeService) -> None:
        """Add a pilot compute service: its pilots (now and later) run this service's units."""
        if pcs._store.url != self._store.url:
            raise PilotError(f"{pcs!r} uses store {pcs._store.url}, this service {self._store.url}")
        self._store.link(self.id, pcs.id)
        self._store.link(pcs.id, self.id)  # the agents of its pilots find this service's queue
        self._start_placer()
        self._wake.set()

    def remove_pilot_compute_service(self, pcs: PilotComputeService) -> None:
        """Stop placing units on ``pcs``'s pilots (units already bound there stay)."""
        self._store.unlink(self.id, pcs.id)
        self._store.unlink(pcs.id, self.id)

    def list_pilot_compute_services(self) -> list[PilotComputeService]:
        """The pilot compute services of this service."""
        return [PilotComputeService(pcs_url=urls.make(self._store.url, "pcs", pcs_id), session=self._session)
                for pcs_id in pcs_children(self._store, self.id)]

    # --- data -------------------------------------------------------------------------------
    def add_pilot_data_service(self, pds: PilotDataService) -> None:
        """Add a pilot data service: its PilotData hold this service's data units."""
        if pds._store.url != self._store.url:
            raise PilotError(f"{pds!r} uses store {pds._store.url}, this service {self._store.url}")
        self._store.link(self.id, pds.id)

    def remove_pilot_data_service(self, pds: PilotDataService) -> None:
        """Stop placing data units in ``pds``'s PilotData (stored data stays)."""
        self._store.unlink(self.id, pds.id)

    def list_pilot_data_services(self) -> list[PilotDataService]:
        """The pilot data services of this service."""
        from pilot.data.objects import PilotDataService

        return [PilotDataService(pds_url=urls.make(self._store.url, "pds", pds_id), session=self._session)
                for pds_id in self._store.children(self.id) if pds_id.startswith("pds-")]

    def submit_data_unit(self, data_unit_description: Mapping[str, Any] | DataUnitDescription) -> DataUnit:
        """Store a data unit in a PilotData of this service chosen by its labels (see
        ``pilot.data.placement``); returns at once, ``du.wait()`` waits for the transfer."""
        from pilot.data.placement import choose_pilot_data

        desc = DataUnitDescription.from_dict(data_unit_description)
        pds_ids = [c for c in self._store.children(self.id) if c.startswith("pds-")]
        pd = choose_pilot_data(self._session, self._store, pds_ids, desc)
        du: DataUnit = pd.submit_data_unit(desc)
        self._store.link(self.id, du.id)
        return du

    def list_data_units(self) -> list[DataUnit]:
        """Every data unit submitted to this service."""
        from pilot.data.objects import DataUnit

        return [DataUnit(session=self._session, _store=self._store, _id=du)
                for du in self._store.children(self.id) if du.startswith("du-")]

    # --- units ------------------------------------------------------------------------------
    def submit_compute_unit(self, compute_unit_description: Mapping[str, Any] | ComputeUnitDescription
                            ) -> ComputeUnit:
        """Queue one unit in this service."""
        return self.submit_compute_units([compute_unit_description])[0]

    def submit_compute_units(self, compute_unit_descriptions: Iterable[Mapping[str, Any] | ComputeUnitDescription]
                             ) -> list[ComputeUnit]:
        """Queue many units in one store round trip. All are validated before any is queued; a
        unit larger than every live pilot fails at once with the reason."""
        records = unit_records(compute_unit_descriptions, cds_id=self.id)
        live = live_pilots(self._store, self.id)
        if live:
            largest = max(int(p.get("slots") or 0) for p in live)
            for rec in records:
                if rec["slots"] > largest:
                    rec.update(state=State.Failed, finished=time.time(),
                               reason=f"needs {rec['slots']} slots; the largest pilot of the service has {largest}")
        self._store.insert_units(records)
        self._start_placer()
        self._wake.set()
        return [ComputeUnit(session=self._session, _store=self._store, _id=r["id"]) for r in records]

    def list_compute_units(self) -> list[ComputeUnit]:
        """Every unit submitted to this service."""
        return [ComputeUnit(session=self._session, _store=self._store, _id=u["id"])
                for u in self._store.find_units(cds_id=self.id)]

    def wait(self, timeout: float | None = None) -> None:
        """Wait until every unit of this service is final. Raises ``PilotError`` naming the units
        when queued units can never run, ``TimeoutError`` after ``timeout`` s."""
        self._start_placer()
        checked = [0.0]

        def all_final() -> bool | None:
            check = time.monotonic() - checked[0] > 0.5
            # units still queued in the service come from the index in order; only when there are
            # none does it list the active units (a listing the store must sort)
            active = self._store.find_units(cds_id=self.id, states=[State.Pending], unbound=True,
                                            limit=100 if check else 1, fields=_WAIT_FIELDS)
            if active and not check:
                return None
            if not active:
                active = self._store.find_units(cds_id=self.id, states=ACTIVE_UNIT_STATES, limit=100,
                                                fields=_WAIT_FIELDS)
                if not active:
                    return True
            if check:
                checked[0] = time.monotonic()
                live_pilots(self._store, self.id, self._session)  # finds dead pilots
                reason = unrunnable_reason(self._store, self.id, active)
                if reason:
                    stuck = [u["id"] for u in active if u.get("pilot_id") is None]
                    shown = ", ".join(stuck[:10]) + (f" and {len(stuck) - 10} more" if len(stuck) > 10 else "")
                    raise PilotError(f"{len(stuck)} queued units can never run ({shown}): {reason}")
            return None

        poll_until(all_final, timeout, f"the units of {self.id}")

    def cancel(self) -> None:
        """Cancel this service's unfinished units and the pilots of its services."""
        self._stop.set()
        self._wake.set()
        active = self._store.find_units(cds_id=self.id, states=ACTIVE_UNIT_STATES, fields=("id",))
        cancel_units(self._store, [u["id"] for u in active], self._session)
        for pcs in self.list_pilot_compute_services():
            pcs.cancel()

    # --- placement (only where this process's session has a policy of its own) ----------------
    def _start_placer(self) -> None:
        if self.placement != "client":
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
