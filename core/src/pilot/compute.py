"""The compute side users hold: PilotComputeService, PilotCompute and ComputeUnit."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pilot import urls
from pilot.descriptions import ComputeUnitDescription, PilotComputeDescription
from pilot.errors import PilotError
from pilot.handles import StoredObject, UrlIdentity, open_url
from pilot.lifecycle import cancel_pilot, cancel_units, fail_pilot, refresh_pilot
from pilot.log import get_logger
from pilot.plugin.types import PilotJobRequest
from pilot.session import Session, default_session, heartbeat_timeout_from_env
from pilot.site import resolve_pilot
from pilot.states import FINAL_STATES, LIVE_PILOT_STATES, Kind, State
from pilot.store import CoordinationStore, Record, change_marker
from pilot.timeouts import check_timeout
from pilot.transitions import transition

DEFAULT_WORK_DIR = "pilot-work"


T = TypeVar("T")


def new_id(prefix: str) -> str:
    """A fresh object id such as ``pilot-1f2e...`` (the hex of a random UUID)."""
    return f"{prefix}-{uuid.uuid4().hex}"


def new_unit_id() -> str:
    """A fresh unit id, ``cu-`` and the hex of a UUID version 7 (milliseconds since the epoch,
    then random bits): units submitted later sort later, so the store's id index grows at its end
    instead of at random places and a million-unit submission stays fast."""
    ms = time.time_ns() // 1_000_000
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 4122 variant
    return f"cu-{value:032x}"


#: Longest a ``wait()`` blocked on the store sleeps before it looks again anyway (a dead pilot
#: shows in no write: its heartbeats stop).
CHECK_EVERY = 0.5
#: Shortest time between two looks of a ``wait()`` woken by changes: a busy store changes all the
#: time, and its waiters then look as often as polling did, not in a tight loop.
BUSY_LOOK_EVERY = 0.05


def _next_change(store: CoordinationStore, since: int | None, timeout: float) -> int | None:
    """``change_marker``, or None when the store cannot tell this time: a store failure (the
    caller polls this round; its next look at the store meets the failure as before) or a store
    written before the method existed."""
    try:
        return change_marker(store, since, timeout)
    except PilotError as exc:
        get_logger().debug("waiting for a store change failed; polling", error=str(exc))
        return None


def poll_until(done: Callable[[], T | None], timeout: float | None, what: str,
               store: CoordinationStore | None = None) -> T:
    """Call ``done()`` until it returns something other than None; raise ``TimeoutError``
    (naming ``what``) after ``timeout`` seconds (``PilotError`` when ``timeout`` is not a
    non-negative finite number or None). Between calls it blocks until ``store`` changes
    (``wait_for_change``), for ``CHECK_EVERY`` s at most, and looks at most every
    ``BUSY_LOOK_EVERY`` s; without a store, or for a round where the store fails, it sleeps
    instead, backing off up to 50 ms."""
    timeout = check_timeout(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.002
    marker: int | None = None
    while True:
        looked = time.monotonic()
        result = done()
        if result is not None:
            return result
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        left = CHECK_EVERY if deadline is None else max(0.0, min(CHECK_EVERY, deadline - time.monotonic()))
        if store is not None:
            # no marker yet (first round, or after a failure): read one and look again at once,
            # since a change made before the marker was read would not wake the wait
            first = marker is None
            marker = _next_change(store, marker, 0 if first else left)
            if marker is not None:
                if not first:
                    time.sleep(max(0.0, min(looked + BUSY_LOOK_EVERY - time.monotonic(), left)))
                continue
        time.sleep(min(delay, left))
        delay = min(delay * 1.5, 0.05)


def check_data_keys(desc: ComputeUnitDescription | PilotComputeDescription) -> None:
    """Data keys are well formed: ``input_data`` and ``output_data`` name data-unit URLs,
    ``file_transfer`` entries parse (a pilot's only into ``BIGJOB_WORK_DIR``). Cheap: the staging
    module is imported only when there are transfers."""
    for du_url in getattr(desc, "input_data", ()):
        try:
            urls.parse(du_url, "data-unit")
        except PilotError as exc:
            raise PilotError(f"input_data: {exc}", key="input_data") from None
    for item in getattr(desc, "output_data", ()):
        for du_url in item:
            try:
                urls.parse(du_url, "data-unit")
            except PilotError as exc:
                raise PilotError(f"output_data: {exc}", key="output_data") from None
            from pilot.data.staging import check_output_patterns

            check_output_patterns(du_url, item[du_url])
    if desc.file_transfer:
        from pilot.data.staging import parse_transfer

        for spec in desc.file_transfer:
            parse_transfer(spec, pilot=isinstance(desc, PilotComputeDescription))


def unit_records(descriptions: Iterable[Mapping[str, Any] | ComputeUnitDescription], *,
                 cds_id: str | None = None, pilot_id: str | None = None, first_index: int = 0) -> list[Record]:
    """Validate every description (all or nothing) and build new queued unit records; errors
    number descriptions from ``first_index``."""
    now = time.time()
    records = []
    for index, raw in enumerate(descriptions, first_index):
        try:
            desc = ComputeUnitDescription.from_dict(raw)
            if desc.input_data or desc.output_data or desc.file_transfer:
                check_data_keys(desc)
        except PilotError as exc:
            raise PilotError(f"compute unit description #{index}: {exc}", key=exc.key) from None
        records.append({
            "id": new_unit_id(), "cds_id": cds_id, "pilot_id": pilot_id, "state": State.Pending,
            "slots": desc.number_of_processes, "description": desc.to_dict(),
            "datacenter": desc.affinity_datacenter_label, "machine": desc.affinity_machine_label,
            "submitted": now, "input_data": list(desc.input_data) or None,
        })
    return records


class ComputeUnit(StoredObject):
    """One task. Reconnect with ``ComputeUnit(cu_url=...)``."""

    __slots__ = ()  # a million of them are held after a big submission

    KIND, URL_ARG, MADE_BY = "unit", "cu_url", "units are created by submit_compute_unit"

    def __init__(self, cu_url: str | None = None, *, session: Session | None = None,
                 _store: CoordinationStore | None = None, _id: str | None = None) -> None:
        super().__init__(cu_url, session=session, store=_store, object_id=_id)

    def _record(self) -> Record:
        found = self._store.get_units([self.id])
        if not found:
            raise PilotError(f"no compute unit {self.id} in {self._store.url}")
        return found[0]

    _load = _record

    def get_state(self) -> State:
        """The unit's state."""
        return State(self._record()["state"])

    def get_details(self) -> dict[str, Any]:
        """Executable, arguments, exit code, host, pilot URL, sandbox, timestamps and reason."""
        rec = self._record()
        desc = rec.get("description") or {}
        return {
            "id": rec["id"], "name": desc.get("name"), "state": State(rec["state"]),
            "executable": desc.get("executable"), "arguments": desc.get("arguments", []),
            "exit_code": rec.get("exit_code"), "host": rec.get("host"),
            "pilot": urls.make(self._store.url, "pilot", rec["pilot_id"]) if rec.get("pilot_id") else None,
            "sandbox": rec.get("sandbox"), "submitted": rec.get("submitted"), "started": rec.get("started"),
            "finished": rec.get("finished"), "reason": rec.get("reason"), "attempts": rec.get("attempts", 0),
            "description": desc,
        }

    def get_exit_code(self) -> int | None:
        """The exit code, once the unit has ended (None before, or when it never started)."""
        code: int | None = self._record().get("exit_code")
        return code

    def get_local_working_directory(self) -> str | None:
        """The unit's sandbox (its working directory), once an agent has picked it."""
        sandbox: str | None = self._record().get("sandbox")
        return sandbox

    def get_subjob(self) -> ComputeUnit:
        """The unit itself (BigJob's handle on the job behind a unit)."""
        return self

    def cancel(self) -> None:
        """Cancel: a queued unit ends at once, a running one is killed by its agent."""
        cancel_units(self._store, [self.id], self._session)  # observers hear it from there

    def wait(self, timeout: float | None = None) -> State:
        """Wait until the unit is final; ``TimeoutError`` after ``timeout`` s; ``PilotError`` when
        no pilot can ever run it."""
        from pilot.service import unrunnable_reason  # the service module imports this one

        checked = [0.0]

        def final() -> State | None:
            rec = self._record()
            if State(rec["state"]) in FINAL_STATES:
                return State(rec["state"])
            if time.monotonic() - checked[0] > 0.5:
                checked[0] = time.monotonic()
                if rec.get("pilot_id"):
                    pilots = self._store.get_pilots([rec["pilot_id"]])
                    if pilots:
                        refresh_pilot(self._session, self._store, pilots[0])
                elif rec.get("cds_id"):
                    reason = unrunnable_reason(self._store, rec["cds_id"], [rec])
                    if reason:
                        raise PilotError(f"compute unit {self.id} can never run: {reason}")
            return None

        return poll_until(final, timeout, f"compute unit {self.id}", self._store)


class PilotCompute(StoredObject):
    """One pilot: a batch job whose agent runs units. Reconnect with ``PilotCompute(pilot_url=...)``."""

    KIND, URL_ARG, MADE_BY = "pilot", "pilot_url", "pilots are created by create_pilot"

    def __init__(self, pilot_url: str | None = None, *, session: Session | None = None,
                 _store: CoordinationStore | None = None, _id: str | None = None) -> None:
        super().__init__(pilot_url, session=session, store=_store, object_id=_id)

    def _record(self) -> Record:
        found = self._store.get_pilots([self.id])
        if not found:
            raise PilotError(f"no pilot {self.id} in {self._store.url}")
        return found[0]

    _load = _record

    def _refreshed(self) -> Record:
        return refresh_pilot(self._session, self._store, self._record())

    def get_state(self) -> State:
        """The pilot's state, checked against its heartbeat and batch job."""
        return State(self._refreshed()["state"])

    def get_details(self) -> dict[str, Any]:
        """Native job id, service URL, slots, hosts, timestamps, failure reason and more."""
        rec = self._refreshed()
        desc = rec.get("description") or {}
        return {
            "id": rec["id"], "state": State(rec["state"]), "native_id": rec.get("native_id"),
            "service_url": desc.get("service_url"), "slots": rec.get("slots"), "hosts": rec.get("hosts") or [],
            "sandbox": rec.get("sandbox"), "submitted": rec.get("submitted"), "started": rec.get("started"),
            "finished": rec.get("finished"), "heartbeat": rec.get("heartbeat"), "reason": rec.get("reason"),
            "description": desc,
        }

    @property
    def pilot_compute_description(self) -> dict[str, Any]:
        """The pilot's description as submitted (validated; a copy)."""
        return dict(self._record().get("description") or {})

    def get_free_nodes(self) -> int:
        """Slots not held by an unfinished unit bound to this pilot."""
        rec = self._record()
        if State(rec["state"]) in FINAL_STATES:
            return 0
        used: int = self._store.count_active([self.id])[self.id]
        return max(0, int(rec.get("slots") or 0) - used)

    def submit_compute_unit(self, compute_unit_description: Mapping[str, Any] | ComputeUnitDescription
                            ) -> ComputeUnit:
        """Run a unit on this pilot (no late binding)."""
        rec = self._record()
        records = unit_records([compute_unit_description], pilot_id=self.id)
        if State(rec["state"]) in FINAL_STATES:
            raise PilotError(f"pilot {self.id} is {rec['state']}: it runs no more units")
        if records[0]["slots"] > int(rec.get("slots") or 0):
            records[0].update(state=State.Failed, finished=time.time(),
                              reason=f"needs {records[0]['slots']} slots; pilot {self.id} has {rec.get('slots')}")
        self._store.insert_units(records)
        return ComputeUnit(session=self._session, _store=self._store, _id=records[0]["id"])

    def list_compute_units(self) -> list[ComputeUnit]:
        """Every unit bound to this pilot."""
        return [ComputeUnit(session=self._session, _store=self._store, _id=u["id"])
                for u in self._store.find_units(pilot_id=self.id)]

    def wait(self, timeout: float | None = None, progress: bool | None = None) -> State:
        """Wait until every unit bound to this pilot is final (or the pilot itself is);
        ``progress`` as for ``ComputeDataService.wait``."""
        from pilot.progress import shown

        def idle() -> State | None:
            state = self.get_state()
            if state.is_final or not self._store.find_units(
                    pilot_id=self.id, states=[s for s in State if not s.is_final], limit=1):
                return state
            return None

        with shown(lambda: self._store.count_units(pilot_id=self.id), f"units of pilot {self.id[:12]}", progress):
            return poll_until(idle, timeout, f"the units of pilot {self.id}", self._store)

    def get_timeline(self) -> list[dict[str, Any]]:
        """One row per unit of this pilot (see ``ComputeDataService.get_timeline``)."""
        from pilot.timeline.data import timeline_of

        return timeline_of(self._store, pilot_id=self.id).rows

    def cancel(self) -> None:
        """Cancel the batch job for real (from a reconnected handle too); its units end Canceled."""
        cancel_pilot(self._session, self._store, self._record())  # observers hear it from there


class PilotComputeService(UrlIdentity):
    """Creates and owns pilots. ``coordination_url`` picks the store (default: embedded SQLite)."""

    def __init__(self, coordination_url: str | None = None, *, pcs_url: str | None = None,
                 heartbeat_timeout: float | None = None, session: Session | None = None) -> None:
        if pcs_url is not None:
            self._session, self._store, self.id = open_url(pcs_url, "pcs", session)
            record = self._store.get_service(self.id)
            if record is None or record["kind"] != "pcs":
                raise PilotError(f"no pilot compute service {self.id} in {self._store.url}")
            self.heartbeat_timeout = float(record["data"].get("heartbeat_timeout", 60.0))
            return
        self._session = session or default_session()
        self._store = self._session.store(coordination_url)
        self.id = new_id("pcs")
        self.heartbeat_timeout = float(heartbeat_timeout or heartbeat_timeout_from_env())
        if not self.heartbeat_timeout > 0:
            raise PilotError(f"heartbeat_timeout must be positive, got {heartbeat_timeout!r}")
        self._store.put_service(self.id, "pcs", {"heartbeat_timeout": self.heartbeat_timeout})

    def __repr__(self) -> str:
        return f"<PilotComputeService {self.id}>"

    def get_url(self) -> str:
        """The URL that reconnects to this service."""
        return urls.make(self._store.url, "pcs", self.id)

    def create_pilot(self, pilot_compute_description: Mapping[str, Any] | PilotComputeDescription
                     ) -> PilotCompute:
        """Validate the description, submit the pilot job, return its handle at once. A
        ``PilotError`` from the adaptor's optional ``check(request)`` (a pilot it can never run,
        e.g. a store its jobs cannot reach) is raised here; a failed submission fails the pilot."""
        site = resolve_pilot(PilotComputeDescription.from_dict(pilot_compute_description))
        desc = site.description
        check_data_keys(desc)
        adaptor = self._session.adaptor(desc.service_url)
        pilot_id = new_id("pilot")
        base = Path(desc.working_directory or os.path.join(os.getcwd(), DEFAULT_WORK_DIR)).expanduser()
        sandbox = base.absolute() / pilot_id
        record = {
            "id": pilot_id, "service_id": self.id, "state": State.New, "description": desc.to_dict(),
            "sandbox": str(sandbox), "scheme": urls.scheme_of(desc.service_url),
            "slots": desc.number_of_processes, "datacenter": desc.affinity_datacenter_label,
            "machine": desc.affinity_machine_label, "heartbeat_timeout": self.heartbeat_timeout,
        }
        argv = (site.python, "-m", "pilot.agent", "--pilot", pilot_id, "--store", self._store.url)
        request = PilotJobRequest(pilot_id, desc, sandbox, argv, dict(desc.environment), site.pre_commands)
        check = getattr(adaptor, "check", None)
        if check is not None:  # a refusal is the caller's error: nothing is stored or submitted
            check(request)
        self._store.insert_pilot(record)
        pilot = PilotCompute(session=self._session, _store=self._store, _id=pilot_id)
        try:
            native_id = adaptor.submit(request)
        except Exception as exc:
            get_logger(pilot=pilot_id).warning("pilot submission failed", error=str(exc))
            fail_pilot(self._session, self._store, record, f"submission failed: {exc}")
            return pilot
        # the job id first, whatever the state: a pilot canceled meanwhile can still be cleaned up
        self._store.update_pilot(pilot_id, {"native_id": native_id, "submitted": time.time()})
        if not transition(self._store, Kind.pilot, [pilot_id], State.Pending, session=self._session,
                          only_from=[State.New]) and pilot.get_state() in (State.Canceled, State.Failed):
            try:  # canceled while it was being submitted: end the batch job too
                adaptor.cancel(native_id)
            except Exception as exc:
                get_logger(pilot=pilot_id).debug("pilot cleanup failed", error=str(exc))
        return pilot

    def list_pilots(self) -> list[PilotCompute]:
        """The pilots of this service (they compare equal to their URLs)."""
        return [PilotCompute(session=self._session, _store=self._store, _id=p["id"])
                for p in self._store.pilots_of([self.id])]

    @property
    def pilot_computes(self) -> list[PilotCompute]:
        """The pilots of this service (BigJob's attribute; ``list_pilots()``)."""
        return self.list_pilots()

    def _live_records(self) -> list[Record]:
        return [p for p in self._store.pilots_of([self.id]) if State(p["state"]) in LIVE_PILOT_STATES]

    def cancel(self) -> None:
        """Cancel every pilot of this service."""
        for pilot in self.list_pilots():
            pilot.cancel()

    def get_timeline(self) -> list[dict[str, Any]]:
        """One row per unit of this service's pilots (see ``ComputeDataService.get_timeline``)."""
        from pilot.timeline.data import timeline_of

        return timeline_of(self._store, pcs_id=self.id).rows

    def wait(self, timeout: float | None = None, progress: bool | None = None) -> None:
        """Wait until every pilot of this service is final; ``progress`` shows the units of its
        pilots as for ``ComputeDataService.wait``."""
        from pilot.progress import shown

        def all_final() -> bool | None:
            live = [refresh_pilot(self._session, self._store, p) for p in self._live_records()]
            return True if all(State(p["state"]) in FINAL_STATES for p in live) else None

        def counts() -> dict[str, int]:
            total: dict[str, int] = {}
            for pilot in self._store.pilots_of([self.id]):
                for state, n in self._store.count_units(pilot_id=pilot["id"]).items():
                    total[state] = total.get(state, 0) + n
            return total

        with shown(counts, f"units of {self.id[:12]}'s pilots", progress):
            poll_until(all_final, timeout, f"the pilots of {self.id}", self._store)

