"""The data side users hold: PilotDataService, PilotData and DataUnit (see ``records`` for how
they live in the store)."""

from __future__ import annotations

import builtins
import os
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from pilot import urls
from pilot.compute import new_id
from pilot.data import records as rec
from pilot.data import transfer
from pilot.descriptions import DataUnitDescription, PilotDataDescription
from pilot.errors import PilotError
from pilot.handles import StoredObject, UrlIdentity, open_url
from pilot.log import get_logger
from pilot.plugin.types import DataBackend
from pilot.session import Session, default_session
from pilot.states import Kind, State
from pilot.store import CoordinationStore
from pilot.timeouts import check_timeout
from pilot.transitions import transition


def _background(target: Any, *args: Any) -> None:
    """Run a transfer in a thread the interpreter waits for at exit (so it is never cut off)."""
    threading.Thread(target=target, args=args, name="pilot-data-transfer", daemon=False).start()


def _place_url(backend: DataBackend, service_url: str, pd_id: str) -> str:
    """The storage place of a new PilotData: ``<service_url>/<pd id>``; a place the backend has on
    this host's filesystem is named by its absolute path (``file://``)."""
    parts = urllib.parse.urlsplit(service_url)
    if parts.password is not None:
        raise PilotError("passwords are not accepted in PilotData URLs (credentials never go to the store); "
                         "use keys or an SSH agent", key="service_url")
    path = backend.local_path(service_url) if transfer.is_local(service_url) else None
    if path is not None:
        return "file://" + urllib.parse.quote(os.path.join(path, pd_id))
    return transfer.join(service_url, pd_id)


class DataUnit(StoredObject):
    """Files stored together in one or more PilotData. Reconnect with ``DataUnit(du_url=...)``."""

    KIND, URL_ARG, MADE_BY = "data-unit", "du_url", "data units are created by submit_data_unit"

    def __init__(self, du_url: str | None = None, *, session: Session | None = None,
                 _store: CoordinationStore | None = None, _id: str | None = None) -> None:
        super().__init__(du_url, session=session, store=_store, object_id=_id)

    def _data(self) -> dict[str, Any]:
        return rec.load(self._store, self.id, "data-unit")

    _load = _data

    def get_state(self) -> State:
        """New, Pending (transfer under way), Running (stored), Done (released) or Failed."""
        return State(self._data()["state"])

    def get_details(self) -> dict[str, Any]:
        """Files, PilotData URLs holding a complete replica, state, reason, size and more."""
        data = self._data()
        files = rec.files_of(data)
        return {"id": self.id, "state": State(data["state"]), "name": (data.get("description") or {}).get("name"),
                "files": sorted(files), "pilot_data": [urls.make(self._store.url, "pilot-data", pd)
                                                       for pd in rec.complete_replicas(data)],
                "replicas": {pd: r.get("state") for pd, r in rec.replicas_of(data).items()},
                "replica_reasons": {pd: r["reason"] for pd, r in rec.replicas_of(data).items() if r.get("reason")},
                "size": sum(int(f["size"]) for f in files.values()), "reason": data.get("reason"),
                "submitted": data.get("submitted"), "description": data.get("description") or {}}

    def list(self) -> dict[str, dict[str, Any]]:
        """``{name: {"pilot_data": [replica file URLs], "local": source, "size": bytes}}``."""
        data = self._data()
        complete = rec.complete_replicas(data)
        return {name: {"pilot_data": [transfer.join(rec.du_place(r, self.id), name) for r in complete.values()],
                       "local": entry.get("local"), "size": entry.get("size")}
                for name, entry in sorted(rec.files_of(data).items())}

    def list_pilot_data(self) -> builtins.list[PilotData]:
        """The PilotData holding a complete replica (they compare equal to their URLs)."""
        return [PilotData(session=self._session, _store=self._store, _id=pd)
                for pd in rec.complete_replicas(self._data())]

    def get_pilot_data(self) -> builtins.list[PilotData]:
        """The PilotData holding a complete replica (BigJob's name for ``list_pilot_data()``)."""
        return self.list_pilot_data()

    def add_pilot_data(self, pilot_data: PilotData) -> None:
        """Replicate this data unit into ``pilot_data`` (in the background, as BigJob did; the
        same as ``pilot_data.submit_data_unit(data_unit=self)``)."""
        pilot_data.submit_data_unit(data_unit=self)

    def add_files(self, file_urls: Sequence[str]) -> builtins.list[str]:
        """Add files (local paths or backend URLs) to every replica; returns their names. A
        file listed already is replaced."""
        if isinstance(file_urls, str | os.PathLike):
            file_urls = [os.fspath(file_urls)]
        if not isinstance(file_urls, Sequence) or not all(isinstance(u, str | os.PathLike) for u in file_urls):
            raise PilotError(f"add_files takes a list of file paths or URLs, got {type(file_urls).__name__}",
                             key="file_urls")
        file_urls = [os.fspath(u) for u in file_urls]
        return rec.add_files(self._session, self._store, self.id, list(file_urls))

    def export(self, directory: str | os.PathLike[str]) -> builtins.list[str]:
        """Copy every file into a local directory (created when missing); returns the paths."""
        state = self.wait()
        if state is not State.Running:
            raise PilotError(f"data unit {self.id} is {state}: nothing to export")
        directory = os.fspath(directory)
        if os.path.lexists(directory) and not os.path.isdir(directory):
            raise PilotError(f"cannot export data unit {self.id}: {directory} exists and is not a directory")
        try:
            return rec.fetch(self._session, self.id, self._data(), directory, link=False)
        except PilotError as exc:
            raise PilotError(f"cannot export data unit {self.id}: {exc}") from None
        except OSError as exc:
            raise PilotError(f"cannot export data unit {self.id} into {directory}: {exc.strerror}") from None

    def wait(self, timeout: float | None = None) -> State:
        """Wait until no transfer of this data unit is under way; its state."""
        return State(rec.wait_stored(self._store, self.id, timeout)["state"])

    def cancel(self, remove_data: bool = False) -> None:
        """Release the data unit (Done; Canceled while still being stored); its files are
        removed from every replica only when ``remove_data``."""
        data = self._data()
        if not transition(self._store, Kind.data_unit, [self.id], State.Done, session=self._session,
                          only_from=[State.Running]):
            transition(self._store, Kind.data_unit, [self.id], State.Canceled, session=self._session)
        if remove_data:
            for replica in rec.replicas_of(data).values():
                place = rec.du_place(replica, self.id)
                self._session.data_backend(place).remove(place, replica.get("options") or {})


class PilotData(StoredObject):
    """A storage place on a data backend. Reconnect with ``PilotData(pd_url=...)``."""

    KIND, URL_ARG, MADE_BY = "pilot-data", "pd_url", "pilot data are created by create_pilot"

    def __init__(self, pd_url: str | None = None, *, session: Session | None = None,
                 _store: CoordinationStore | None = None, _id: str | None = None) -> None:
        super().__init__(pd_url, session=session, store=_store, object_id=_id)

    def _data(self) -> dict[str, Any]:
        return rec.load(self._store, self.id, "pilot-data")

    _load = _data

    def get_state(self) -> State:
        """Running while usable; Canceled once released."""
        return State(self._data()["state"])

    def get_details(self) -> dict[str, Any]:
        """Service URL, storage place, size and bytes used, labels, state, data units."""
        data = self._data()
        return {"id": self.id, "state": State(data["state"]), "service_url": data["description"]["service_url"],
                "place": data["place"], "size": data.get("size"), "used": rec.used_bytes(self._store, self.id),
                "datacenter": data.get("datacenter"), "machine": data.get("machine"),
                "data_units": [urls.make(self._store.url, "data-unit", d) for d in self._store.children(self.id)],
                "description": data["description"]}

    def list_data_units(self) -> list[DataUnit]:
        """The data units with a replica here (they compare equal to their URLs)."""
        return [DataUnit(session=self._session, _store=self._store, _id=d) for d in self._store.children(self.id)]

    def get_du(self, du_url: str) -> DataUnit | None:
        """One data unit of this PilotData, by URL (or id); None when it has no replica here."""
        du_id = du_url if "#" not in du_url else urls.parse(du_url, "data-unit").id
        if du_id not in self._store.children(self.id):
            return None
        return DataUnit(session=self._session, _store=self._store, _id=du_id)

    def submit_data_unit(self, data_unit_description: Mapping[str, Any] | DataUnitDescription | None = None, *,
                         data_unit: DataUnit | None = None, replicate: bool = True) -> DataUnit:
        """Store a new data unit here, or (``data_unit=du``) replicate an existing one here. A
        new unit's ``number_of_replicas`` (else this PilotData's) more than one also replicates
        it into other live PilotData of this service (with ``replicate``). Returns at once; the
        transfers run in the background (``du.wait()``)."""
        pd = self._data()
        if pd["state"] != State.Running:
            raise PilotError(f"PilotData {self.id} is {pd['state']}: it takes no more data")
        if data_unit is not None:
            return self._replicate(pd, data_unit)
        if data_unit_description is None:
            raise PilotError("submit_data_unit needs a description or data_unit=")
        desc = DataUnitDescription.from_dict(data_unit_description)
        more: list[PilotData] = []
        if replicate:
            from pilot.data.placement import replica_targets

            more = replica_targets(self._session, self._store, [pd["pds_id"]], desc, self.id,
                                   default=(pd.get("description") or {}).get("number_of_replicas"))
        items = rec.sources(self._session, desc.file_urls)
        rec.check_room(self._store, self.id, pd, sum(i.info.size for i in items))
        du_id = new_id("du")
        self._store.put_service(du_id, "data-unit", {
            "state": State.New.value, "description": desc.to_dict(), "submitted": time.time(),
            "datacenter": desc.affinity_datacenter_label, "machine": desc.affinity_machine_label,
            rec.AT + self.id: rec.replica_entry(self.id, pd, State.Pending)})
        self._store.link(self.id, du_id)
        transition(self._store, Kind.data_unit, [du_id], State.Pending, session=self._session)
        _background(self._store_new, du_id, pd, items)
        du = DataUnit(session=self._session, _store=self._store, _id=du_id)
        for other in more:
            other.submit_data_unit(data_unit=du)
        return du

    def _store_new(self, du_id: str, pd: dict[str, Any], items: list[rec.Source]) -> None:
        replica = rec.replica_entry(self.id, pd, State.Running)
        try:
            entries = rec.store_sources(self._session, du_id, replica, items)
        except Exception as exc:
            reason = f"storing in PilotData {self.id} failed: {exc}"
            get_logger(du=du_id).warning("data unit failed", reason=reason)
            transition(self._store, Kind.data_unit, [du_id], State.Failed, {
                "reason": reason, rec.AT + self.id: rec.replica_entry(self.id, pd, State.Failed, reason)},
                session=self._session, only_from=[State.Pending])
            return
        transition(self._store, Kind.data_unit, [du_id], State.Running, {**entries, rec.AT + self.id: replica},
                   session=self._session, only_from=[State.Pending])

    def _replicate(self, pd: dict[str, Any], du: DataUnit) -> DataUnit:
        if du._store.url != self._store.url:
            raise PilotError(f"{du!r} lives in store {du._store.url}, this PilotData in {self._store.url}")
        data = du._data()
        if State(data["state"]).is_final:
            raise PilotError(f"data unit {du.id} is {data['state']}: it cannot be replicated")
        replica = rec.replicas_of(data).get(self.id)
        if replica is not None and replica.get("state") in (State.Running, State.Pending):
            return DataUnit(session=self._session, _store=self._store, _id=du.id)
        rec.check_room(self._store, self.id, pd, sum(int(f["size"]) for f in rec.files_of(data).values()))
        self._store.update_service(du.id, {rec.AT + self.id: rec.replica_entry(self.id, pd, State.Pending)})
        self._store.link(self.id, du.id)
        _background(self._copy_in, du.id, pd)
        return DataUnit(session=self._session, _store=self._store, _id=du.id)

    def _copy_in(self, du_id: str, pd: dict[str, Any]) -> None:
        replica = rec.replica_entry(self.id, pd, State.Running)
        try:
            data = rec.wait_running(self._store, du_id)
            source = rec.pick_replica(self._session, {k: v for k, v in data.items() if k != rec.AT + self.id})
            rec.copy_replica(self._session, du_id, data, source, replica)
            # files added while we copied: copy those too
            latest = rec.load(self._store, du_id, "data-unit")
            missing = sorted(set(rec.files_of(latest)) - set(rec.files_of(data)))
            if missing:
                rec.copy_replica(self._session, du_id, latest, source, replica, names=missing)
        except Exception as exc:
            reason = f"replication into PilotData {self.id} failed: {exc}"
            get_logger(du=du_id).warning("replica failed", reason=reason)
            self._store.update_service(du_id, {rec.AT + self.id: rec.replica_entry(self.id, pd, State.Failed, reason)})
            return
        self._store.update_service(du_id, {rec.AT + self.id: replica})

    def wait(self, timeout: float | None = None) -> None:
        """Wait until no transfer into this PilotData is under way."""
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        for du_id in self._store.children(self.id):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            rec.wait_stored(self._store, du_id, left)

    def cancel(self, remove_data: bool = False) -> None:
        """Release this PilotData (it takes no more data); its files are removed only when
        ``remove_data``."""
        data = self._data()
        transition(self._store, Kind.pilot_data, [self.id], State.Canceled, session=self._session)
        if remove_data:
            self._session.data_backend(data["place"]).remove(data["place"], data.get("options") or {})


#: Parts of an ``extra`` key (split at ``_``, ``-``, ``.``) that say it holds a credential.
_SECRET_WORDS = frozenset({"password", "passwd", "pwd", "passphrase", "secret", "token", "credential",
                           "credentials", "key", "privatekey", "apikey", "accesskey", "auth", "pkey", "cookie"})
_WHERE_CREDENTIALS_GO = (
    "credentials are never stored with a PilotData (its extra is kept in the coordination store). "
    "SFTP authenticates with SSH keys: name a key file in extra.identity_file or $PILOT_SSH_IDENTITY, "
    "or load the key into the SSH agent; a Redis password goes in the store URL once or in the "
    "credentials file (see pilot-redis); Globus logs in with `pilot globus login` or a client credentials "
    "file named in the site configuration (see pilot-globus)")


def _secret_key(key: str) -> bool:
    words = [w for w in key.lower().replace("-", "_").replace(".", "_").split("_") if w]
    joined = "".join(words)
    return any(w in _SECRET_WORDS for w in words) or any(
        joined.endswith(s) for s in ("password", "passwd", "passphrase", "secret", "token", "privatekey", "apikey"))


def check_no_credentials(extra: Mapping[str, Any], where: str = "extra") -> None:
    """Refuse ``extra`` keys (at any depth) that name a credential, and values holding key material;
    ``PilotError`` names the key, never the value."""
    for key, value in extra.items():
        name = f"{where}[{key!r}]"
        if isinstance(key, str) and _secret_key(key):
            raise PilotError(f"PilotData {name} looks like a credential; {_WHERE_CREDENTIALS_GO}", key=name)
        if isinstance(value, str) and "PRIVATE KEY" in value:
            raise PilotError(f"PilotData {name} holds private key material; {_WHERE_CREDENTIALS_GO}", key=name)
        if isinstance(value, Mapping):
            check_no_credentials(value, name)
        elif isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, Mapping):
                    check_no_credentials(item, name)
                elif isinstance(item, str) and "PRIVATE KEY" in item:
                    raise PilotError(f"PilotData {name} holds private key material; {_WHERE_CREDENTIALS_GO}",
                                     key=name)


class PilotDataService(UrlIdentity):
    """Creates and owns PilotData. ``coordination_url`` picks the store (default: embedded)."""

    def __init__(self, coordination_url: str | None = None, *, pds_url: str | None = None,
                 session: Session | None = None) -> None:
        if pds_url is not None:
            self._session, self._store, self.id = open_url(pds_url, "pds", session)
            rec.load(self._store, self.id, "pds")
            return
        self._session = session or default_session()
        self._store = self._session.store(coordination_url)
        self.id = new_id("pds")
        self._store.put_service(self.id, "pds", {})

    def __repr__(self) -> str:
        return f"<PilotDataService {self.id}>"

    def get_url(self) -> str:
        """The URL that reconnects to this service."""
        return urls.make(self._store.url, "pds", self.id)

    def create_pilot(self, pilot_data_description: Mapping[str, Any] | PilotDataDescription) -> PilotData:
        """Validate the description, create the storage place, return the PilotData."""
        desc = PilotDataDescription.from_dict(pilot_data_description)
        check_no_credentials(desc.extra)
        backend = self._session.data_backend(desc.service_url)  # PilotError for an unknown scheme
        pd_id = new_id("pd")
        place = _place_url(backend, desc.service_url, pd_id)
        options = dict(desc.extra)
        try:
            transfer.retried(backend.create_place, place, options)
        except PilotError as exc:
            raise PilotError(f"cannot create PilotData at {desc.service_url}: {exc}", key="service_url") from None
        self._store.put_service(pd_id, "pilot-data", {
            "state": State.Running.value, "pds_id": self.id, "description": desc.to_dict(), "place": place,
            "options": options, "datacenter": desc.affinity_datacenter_label,
            "machine": desc.affinity_machine_label, "size": None if desc.size is None else int(desc.size * rec.MB),
            "created": time.time()})
        self._store.link(self.id, pd_id)
        return PilotData(session=self._session, _store=self._store, _id=pd_id)

    def list_pilots(self) -> list[PilotData]:
        """The PilotData of this service (they compare equal to their URLs)."""
        return [PilotData(session=self._session, _store=self._store, _id=pd) for pd in self._store.children(self.id)]

    def get_pilot(self, pd_url: str) -> PilotData | None:
        """One PilotData of this service, by URL (or id); None when it is not this service's."""
        pd_id = pd_url if "#" not in pd_url else urls.parse(pd_url, "pilot-data").id
        if pd_id not in self._store.children(self.id):
            return None
        return PilotData(session=self._session, _store=self._store, _id=pd_id)

    def wait(self, timeout: float | None = None) -> None:
        """Wait until no transfer into any PilotData of this service is under way."""
        check_timeout(timeout)
        for pd in self.list_pilots():
            pd.wait(timeout)

    def cancel(self) -> None:
        """Release every PilotData of this service (their files stay)."""
        for pd in self.list_pilots():
            pd.cancel()
