"""DataUnit and PilotData records in the coordination store, and the operations on them that
the client and the agent share (storing files into every replica, adding files, fetching).

Data objects are service records (``put_service``/``update_service``):

- ``pds``: a PilotDataService; links ``pds -> pilot-data``.
- ``pilot-data``: ``state``, ``description``, ``place`` (the storage place URL, credential
  free), ``options`` (backend keys), ``datacenter``, ``machine``, ``size`` (bytes or None);
  links ``pilot-data -> data-unit``.
- ``data-unit``: ``state``, ``description``, ``reason``, one key ``file:<name>`` per stored
  file (``size``, ``checksum``, ``local``: where it came from) and one key ``at:<pd id>`` per
  replica (``state``, ``place``, ``options``, ``datacenter``, ``machine``, ``reason``). One key
  per file and per replica, so concurrent writers (units adding outputs) never overwrite each
  other: ``update_service`` merges keys atomically.

``ssh://localhost/path`` and ``ssh:///path`` (BigJob's usual way to name a file on this machine)
are local paths here (``local_alias``); ``ssh://otherhost/path`` goes to the SFTP backend.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pilot.data import transfer
from pilot.errors import PilotError
from pilot.plugin.types import FileInfo
from pilot.states import State
from pilot.timeouts import check_timeout

if TYPE_CHECKING:
    from pilot.session import Session
    from pilot.store import CoordinationStore

FILE = "file:"
AT = "at:"
MB = 1_000_000
#: Hosts of an ``ssh://`` URL that mean this machine (with no user and no port in the URL).
_THIS_HOST = frozenset(("", "localhost", "127.0.0.1", "::1"))


def local_alias(url: str) -> str:
    """The local path that ``url`` names when it is BigJob's ``ssh://localhost/path`` or
    ``ssh:///path`` (also this host's name or a loopback address, with no user and no port;
    ``/~/`` is the home directory); any other URL or path is returned unchanged."""
    if url[:4].lower() != "ssh:":
        return url
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return url  # malformed: the backend names the problem
    host = (parts.hostname or "").lower()
    if parts.username is not None or port is not None or not parts.path or parts.query:
        return url
    if host not in _THIS_HOST and host != socket.gethostname().lower():
        return url
    path = urllib.parse.unquote(parts.path)
    return os.path.expanduser(path[1:]) if path == "/~" or path.startswith("/~/") else path


def files_of(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{name: {size, checksum, local}}`` of a DataUnit record's data."""
    return {k[len(FILE):]: v for k, v in data.items() if k.startswith(FILE) and v is not None}


def replicas_of(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{pd id: {state, place, options, datacenter, machine}}`` of a DataUnit record's data."""
    return {k[len(AT):]: v for k, v in data.items() if k.startswith(AT) and v is not None}


def complete_replicas(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The replicas that hold every file."""
    return {pd: r for pd, r in replicas_of(data).items() if r.get("state") == State.Running}


def info_of(entry: Mapping[str, Any], name: str) -> FileInfo:
    """The expected FileInfo of a stored file entry."""
    return FileInfo(name, int(entry["size"]), entry.get("checksum"))


def replica_entry(pd_id: str, pd: Mapping[str, Any], state: State, reason: str | None = None) -> dict[str, Any]:
    """The ``at:<pd>`` value for a replica of a DU in PilotData ``pd`` (its record data)."""
    return {"state": state.value, "place": pd["place"], "options": pd.get("options") or {},
            "datacenter": pd.get("datacenter"), "machine": pd.get("machine"), "reason": reason, "pd": pd_id}


def du_place(replica: Mapping[str, Any], du_id: str) -> str:
    """The directory of a DU inside a replica's PilotData place."""
    return transfer.join(str(replica["place"]), du_id)


def load(store: CoordinationStore, object_id: str, kind: str) -> dict[str, Any]:
    """The data of a service record of ``kind``; ``PilotError`` when there is none."""
    record = store.get_service(object_id)
    if record is None or record["kind"] != kind:
        raise PilotError(f"no {kind} {object_id} in {store.url}")
    data: dict[str, Any] = record["data"]
    return data


def used_bytes(store: CoordinationStore, pd_id: str) -> int:
    """Bytes of every file of every DU with a replica in ``pd_id``."""
    used = 0
    for record in store.get_services(store.children(pd_id)):
        if AT + pd_id in record["data"]:
            used += sum(int(f["size"]) for f in files_of(record["data"]).values())
    return used


def check_room(store: CoordinationStore, pd_id: str, pd: Mapping[str, Any], adding: int) -> None:
    """``PilotError`` when ``adding`` bytes would exceed the PilotData's ``size``."""
    limit = pd.get("size")
    if limit is None or adding == 0:
        return
    used = used_bytes(store, pd_id)
    if used + adding > limit:
        raise PilotError(f"PilotData {pd_id} is full: {adding / MB:g} MB more would make {(used + adding) / MB:g} MB "
                         f"of its {limit / MB:g} MB (size)", key="size")


class Source:
    """One file to store: its name, where it is (local path or backend URL) and its info."""

    def __init__(self, session: Session, url: str) -> None:
        self.url = url
        self.name = transfer.base_name(url)
        local = local_alias(url)
        backend = session.data_backend(local)  # PilotError naming the scheme no plugin serves
        self.path: str | None = backend.local_path(local)
        if self.path is not None:  # a file on this host: read, linked or copied from here
            self.info = transfer.local_info(self.path)
        else:
            try:
                self.info = backend.stat(local, {})
            except PilotError as exc:
                raise PilotError(f"no such file: {url} ({exc})", key="file_urls") from None

    def store_at(self, session: Session, dst: str, options: Mapping[str, Any]) -> FileInfo:
        """Copy this source to ``dst``, verified."""
        if self.path is not None:
            return transfer.put(session, self.path, dst, options, self.info)
        return transfer.copy(session, self.url, {}, dst, options, expected=self.info)


def sources(session: Session, urls: Iterable[str], taken: Iterable[str] = ()) -> list[Source]:
    """Check every source exists (``PilotError`` naming the path otherwise) and names are unique."""
    out: list[Source] = []
    names = set(taken)
    for url in urls:
        try:
            source = Source(session, url)
        except PilotError as exc:
            raise PilotError(str(exc), key="file_urls") from None
        if source.name in names:
            raise PilotError(f"two files named {source.name!r} in one data unit ({url})", key="file_urls")
        names.add(source.name)
        out.append(source)
    return out


def store_sources(session: Session, du_id: str, replica: Mapping[str, Any], items: Sequence[Source]
                  ) -> dict[str, dict[str, Any]]:
    """Store ``items`` in one replica; return the ``file:<name>`` entries."""
    place = du_place(replica, du_id)
    options = replica.get("options") or {}
    if items:
        session.data_backend(place).create_place(place, options)
    local = [i for i in items if i.path is not None]
    stored = dict(zip((i.name for i in local), transfer.put_files(
        session, [(str(i.path), transfer.join(place, i.name), i.info) for i in local], options) if local else [],
        strict=True))
    entries = {}
    for item in items:
        got = stored.get(item.name) or item.store_at(session, transfer.join(place, item.name), options)
        entries[FILE + item.name] = {"size": got.size, "checksum": got.checksum or item.info.checksum,
                                     "local": item.url}
    return entries


def copy_replica(session: Session, du_id: str, data: Mapping[str, Any], src: Mapping[str, Any],
                 dst: Mapping[str, Any], *, names: Iterable[str] | None = None) -> None:
    """Copy the files (``names``, default all) of a DU from replica ``src`` to ``dst``."""
    files = files_of(data)
    src_place, dst_place = du_place(src, du_id), du_place(dst, du_id)
    session.data_backend(dst_place).create_place(dst_place, dst.get("options") or {})
    transfer.copy_files(session, [(transfer.join(src_place, name), transfer.join(dst_place, name),
                                   info_of(files[name], name)) for name in (sorted(files) if names is None else names)],
                        src.get("options") or {}, dst.get("options") or {})


def add_files(session: Session, store: CoordinationStore, du_id: str, urls: Sequence[str]) -> list[str]:
    """Store files in every replica of a DU, then list them in its record (one merge); returns
    their names. The DU must be stored (Running)."""
    data = load(store, du_id, "data-unit")
    if data.get("state") != State.Running:
        wait_stored(store, du_id, None)
        data = load(store, du_id, "data-unit")
    items = sources(session, urls)
    replicas = {pd: r for pd, r in replicas_of(data).items() if r.get("state") in (State.Running, State.Pending)}
    if not replicas:
        raise PilotError(f"data unit {du_id} has no replica to add files to")
    adding = sum(i.info.size for i in items)
    for pd_id in replicas:
        pd = store.get_service(pd_id)
        if pd is not None:
            check_room(store, pd_id, pd["data"], adding)
    entries: dict[str, dict[str, Any]] = {}
    for replica in replicas.values():
        for key, entry in store_sources(session, du_id, replica, items).items():
            entry["checksum"] = entry["checksum"] or (entries.get(key) or {}).get("checksum")
            entries[key] = entry
    if entries:
        store.update_service(du_id, entries)
    return [i.name for i in items]


def wait_stored(store: CoordinationStore, du_id: str, timeout: float | None) -> dict[str, Any]:
    """Wait until the DU is stored (no transfer under way) or final; its data."""
    timeout = check_timeout(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.005
    while True:
        data = load(store, du_id, "data-unit")
        busy = any(r.get("state") == State.Pending for r in replicas_of(data).values())
        if data.get("state") not in (State.New, State.Pending) and not busy:
            return data
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for data unit {du_id}")
        time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.2)


class WaitStopped(Exception):
    """``wait_running`` gave up because its ``stop`` callback said so (the unit was canceled, or
    its agent drains); the message is the callback's answer."""


def wait_running(store: CoordinationStore, du_id: str, stop: Callable[[], str | None] | None = None) -> dict[str, Any]:
    """Wait until the DU is stored (Running); its data. ``PilotError`` when it ended otherwise;
    ``WaitStopped`` as soon as ``stop()`` (asked every 0.2 s at most) returns a reason."""
    delay = 0.005
    while True:
        data = load(store, du_id, "data-unit")
        state = State(data["state"])
        if state is State.Running:
            return data
        if state.is_final:
            raise PilotError(f"data unit {du_id} is {state}" + (f": {data['reason']}" if data.get("reason") else ""))
        why = stop() if stop is not None else None
        if why:
            raise WaitStopped(why)
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def pick_replica(session: Session, data: Mapping[str, Any]) -> dict[str, Any]:
    """A complete replica, preferring one on this host's filesystem (so files can be linked)."""
    complete = list(complete_replicas(data).values())
    if not complete:
        raise PilotError("it has no complete replica")
    for replica in complete:
        if session.data_backend(replica["place"]).local_path(replica["place"]) is not None:
            return replica
    return complete[0]


def fetch(session: Session, du_id: str, data: Mapping[str, Any], directory: str, *, link: bool) -> list[str]:
    """Put every file of a DU into ``directory`` (linked from a local replica when ``link``);
    returns the paths."""
    replica = pick_replica(session, data)
    place = du_place(replica, du_id)
    backend = session.data_backend(place)
    options = replica.get("options") or {}
    os.makedirs(directory, exist_ok=True)
    out, fetching = [], []
    for name, entry in sorted(files_of(data).items()):
        url, dst = transfer.join(place, name), os.path.join(directory, name)
        src = backend.local_path(url) if link else None
        if src is not None:
            from pilot.files import link_or_copy

            link_or_copy(src, dst)
            transfer.verify(transfer.local_info(dst), info_of(entry, name), f"linking {url}")
        else:
            fetching.append((url, dst, info_of(entry, name)))
        out.append(dst)
    if fetching:
        transfer.get_files(session, fetching, options)
    return out
