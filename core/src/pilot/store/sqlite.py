"""The embedded coordination store: one SQLite file (WAL), the default when no
``coordination_url`` is given. Safe for many processes on one host."""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import tenacity

from pilot.errors import PilotError, StoreClosed
from pilot.plugin import hookimpl
from pilot.plugin.types import CoordinationStoreRecord
from pilot.states import ACTIVE_UNIT_STATES, CLAIMABLE_STATE, QUEUED_UNIT_STATES, State
from pilot.store import JSON_FIELDS, PILOT_FIELDS, UNIT_FIELDS, Record, UnitUpdate
from pilot.store.sqlite_changes import ChangeMarks
from pilot.store.sqlite_lock import WriterLock
from pilot.store.sqlite_schema import damaged, make_private, prepare
from pilot.store.sqlite_updates import expected_states, states_of, update_many, update_one

T = TypeVar("T")

_ACTIVE = tuple(s.value for s in ACTIVE_UNIT_STATES)
_QUEUED = tuple(s.value for s in QUEUED_UNIT_STATES)
# The service queues an agent claims from: literal terms, so that the partial indexes apply.
_PLAIN = ("pilot_id IS NULL AND state = 'Pending' AND datacenter IS NULL AND machine IS NULL"
          " AND input_data IS NULL")
# the same test as a filter only ("+" keeps the planner off indexes on these columns): a claim's
# UPDATE finds its rows by seq; with an index on pilot_id it would scan every queued unit
_PLAIN_FILTER = ("+pilot_id IS NULL AND +state = 'Pending' AND +datacenter IS NULL AND +machine IS NULL"
                 " AND +input_data IS NULL")
_CONSTRAINED = ("pilot_id IS NULL AND state = 'Pending'"
                " AND (datacenter IS NOT NULL OR machine IS NOT NULL OR input_data IS NOT NULL)")
assert CLAIMABLE_STATE.value == "Pending"


def _is_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def _retrying(func: Callable[..., T]) -> Callable[..., T]:
    """Retry a store call that met a busy database, with jittered backoff, for up to a minute;
    a damaged file (``DatabaseError``, or an ``OperationalError`` other than busy) ends in
    ``PilotError`` naming it. The first attempt is a plain call: tenacity's set-up costs about
    15 µs a call, more than most of these calls, and is needed only once an attempt met a busy
    database (SQLite itself waits ``busy_timeout`` for a lock before it says so)."""
    wrapped: Callable[..., T] = tenacity.retry(
        retry=tenacity.retry_if_exception(_is_busy),
        wait=tenacity.wait_random_exponential(multiplier=0.005, max=1.0),
        stop=tenacity.stop_after_delay(60),
        reraise=True,
    )(func)

    @functools.wraps(func)
    def call(self: SQLiteStore, *args: Any, **kwargs: Any) -> T:
        try:
            try:
                return func(self, *args, **kwargs)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
            return wrapped(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if type(exc) is sqlite3.DatabaseError or (type(exc) is sqlite3.OperationalError and not _is_busy(exc)):
                raise damaged(self.path, exc) from exc
            raise
    return call


_KNOWN = {PILOT_FIELDS: frozenset(PILOT_FIELDS), UNIT_FIELDS: frozenset(UNIT_FIELDS)}
_to_json = json.JSONEncoder(separators=(",", ":")).encode


def _encode(record: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    known = _KNOWN.get(fields) or frozenset(fields)
    out = {}
    for key, value in record.items():
        if key not in known:
            raise PilotError(f"unknown store field {key!r}")
        if key in JSON_FIELDS and value is not None:
            value = _to_json(value)
        elif isinstance(value, State):
            value = value.value
        elif value is True or value is False:
            value = int(value)
        out[key] = value
    return out


def _decode(row: sqlite3.Row) -> Record:
    record = dict(zip(row.keys(), row, strict=True))  # a third of the time of row[name] per column
    record.pop("seq", None)
    for key in JSON_FIELDS:
        if record.get(key) is not None:
            record[key] = json.loads(record[key])
    if "cancel_requested" in record:
        record["cancel_requested"] = bool(record["cancel_requested"])
    if "claimed" in record:
        record["claimed"] = bool(record["claimed"])
    return record


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


class SQLiteStore:
    """A coordination store in one SQLite file; one connection per thread."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        """Open the store at ``path``; ``create``: make it (directory 0700, file 0600) when it
        does not exist, else ``PilotError`` (reconnecting by an object URL never creates one)."""
        self.path = Path(path).expanduser().absolute()
        # Quoted, so a path holding '#', '%' or '?' survives in object URLs and opens again.
        self.url = f"sqlite://{urllib.parse.quote(str(self.path))}"
        self._local = threading.local()
        self._all: dict[int, sqlite3.Connection] = {}  # thread ident -> its connection
        self._closed = False
        self._lock = threading.Lock()
        self._changes = ChangeMarks()
        self._writers = WriterLock(self.path)  # writers wait their turn in the kernel, not in SQLite's sleeps
        if not create and not self.path.is_file():
            raise PilotError(f"no coordination store at {self.path}: check the URL (a store is created only "
                             "by a service given a new coordination_url)", key="coordination_url")
        try:
            make_private(self.path)
        except OSError as exc:
            raise PilotError(f"cannot open the coordination store {self.path}: {exc}") from exc
        self._setup()

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> SQLiteStore:
        """Open ``sqlite:///absolute/path`` (``create``: see the constructor)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "sqlite" or not parts.path or parts.netloc:
            raise PilotError(f"not an SQLite store URL: {url!r} (expected sqlite:///absolute/path)",
                             key="coordination_url")
        return cls(urllib.parse.unquote(parts.path), create=create)

    def _con(self) -> sqlite3.Connection:
        if self._closed:
            with self._lock:
                own = self._all.pop(threading.get_ident(), None)
            if own is not None:
                own.close()
            self._writers.close([threading.get_ident()])
            raise StoreClosed(f"the coordination store {self.url} is closed")
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            try:
                con = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
            except sqlite3.Error as exc:
                raise PilotError(f"cannot open the coordination store {self.path}: {exc}") from exc
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA busy_timeout=30000")
            self._local.con = con
            with self._lock:
                self._all[threading.get_ident()] = con
        return con

    @_retrying
    def _setup(self) -> None:
        prepare(self._con(), self.path)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        con = self._con()
        with self._writers.held():
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        self._changes.committed()

    def close(self) -> None:
        """Close the store: this thread's connection and those of threads that have ended now;
        a thread still running closes its own on its next call (closing a connection another
        thread may be using crashes SQLite)."""
        self._closed = True
        alive = {thread.ident for thread in threading.enumerate()}
        with self._lock:
            gone = [ident for ident in self._all if ident == threading.get_ident() or ident not in alive]
            for ident in gone:
                self._all.pop(ident).close()
        self._writers.close(gone)
        self._local = threading.local()

    def wait_for_change(self, since: int | None, timeout: float) -> int:
        """The change marker (see ``CoordinationStore``): ``PRAGMA data_version`` polled on this
        thread's connection, with this object's own commits (``pilot.store.sqlite_changes``)."""
        return ChangeMarks.wait(self._marker, since, timeout)

    @_retrying
    def _marker(self) -> int:
        return self._changes.marker(self._con())

    # --- services ---------------------------------------------------------------------------
    @_retrying
    def put_service(self, service_id: str, kind: str, data: Mapping[str, Any]) -> None:
        with self._write() as con:
            con.execute("INSERT OR REPLACE INTO services (id, kind, data) VALUES (?, ?, ?)",
                        (service_id, kind, json.dumps(dict(data))))

    @_retrying
    def get_service(self, service_id: str) -> Record | None:
        row = self._con().execute("SELECT id, kind, data FROM services WHERE id = ?", (service_id,)).fetchone()
        return None if row is None else {"id": row["id"], "kind": row["kind"], "data": json.loads(row["data"])}

    @_retrying
    def get_services(self, ids: Sequence[str]) -> list[Record]:
        if not ids:
            return []
        rows = self._con().execute(f"SELECT id, kind, data FROM services WHERE id IN ({_marks(ids)})", tuple(ids))
        found = {row["id"]: {"id": row["id"], "kind": row["kind"], "data": json.loads(row["data"])} for row in rows}
        return [found[i] for i in ids if i in found]

    def find_services(self, kinds: Sequence[str] | None = None) -> list[Record]:
        query, args = "SELECT id, kind, data FROM services", tuple(kinds or ())
        if kinds is not None:
            query += f" WHERE kind IN ({_marks(kinds)})" if kinds else " WHERE 0"
        return [{"id": row["id"], "kind": row["kind"], "data": json.loads(row["data"])}
                for row in self._con().execute(query, args)]

    @_retrying
    def update_service(self, service_id: str, changes: Mapping[str, Any],
                       expect: Sequence[State] | None = None) -> bool:
        with self._write() as con:
            row = con.execute("SELECT data FROM services WHERE id = ?", (service_id,)).fetchone()
            if row is None:
                return False
            data = json.loads(row["data"])
            if expect is not None and data.get("state") not in {State(s).value for s in expect}:
                return False
            data.update({k: v.value if isinstance(v, State) else v for k, v in changes.items()})
            con.execute("UPDATE services SET data = ? WHERE id = ?", (json.dumps(data), service_id))
        return True

    @_retrying
    def link(self, parent: str, child: str) -> None:
        with self._write() as con:
            con.execute("INSERT OR IGNORE INTO links (parent, child) VALUES (?, ?)", (parent, child))

    @_retrying
    def unlink(self, parent: str, child: str) -> None:
        with self._write() as con:
            con.execute("DELETE FROM links WHERE parent = ? AND child = ?", (parent, child))

    @_retrying
    def children(self, parent: str) -> list[str]:
        rows = self._con().execute("SELECT child FROM links WHERE parent = ? ORDER BY seq", (parent,))
        return [row[0] for row in rows]

    # --- pilots -----------------------------------------------------------------------------
    @_retrying
    def insert_pilot(self, record: Mapping[str, Any]) -> None:
        row = _encode(record, PILOT_FIELDS)
        with self._write() as con:
            con.execute(f"INSERT INTO pilots ({','.join(row)}) VALUES ({_marks(list(row))})", tuple(row.values()))

    @_retrying
    def get_pilots(self, ids: Sequence[str]) -> list[Record]:
        if not ids:
            return []
        rows = self._con().execute(f"SELECT * FROM pilots WHERE id IN ({_marks(ids)}) ORDER BY seq", tuple(ids))
        return [_decode(row) for row in rows]

    @_retrying
    def pilots_of(self, service_ids: Sequence[str]) -> list[Record]:
        if not service_ids:
            return []
        rows = self._con().execute(
            f"SELECT * FROM pilots WHERE service_id IN ({_marks(service_ids)}) ORDER BY seq", tuple(service_ids))
        return [_decode(row) for row in rows]

    @_retrying
    def find_pilots(self, states: Sequence[State] | None = None) -> list[Record]:
        if states is None:
            rows = self._con().execute("SELECT * FROM pilots ORDER BY seq")
        else:
            values = [State(s).value for s in states]
            rows = self._con().execute(f"SELECT * FROM pilots WHERE state IN ({_marks(values)}) ORDER BY seq", values)
        return [_decode(row) for row in rows]

    @_retrying
    def update_pilot(self, pilot_id: str, changes: Mapping[str, Any],
                     expect: Sequence[State] | None = None) -> bool:
        row = _encode(changes, PILOT_FIELDS)
        sql = f"UPDATE pilots SET {', '.join(f'{k} = ?' for k in row)} WHERE id = ?"
        args: list[Any] = [*row.values(), pilot_id]
        if expect is not None:
            sql += f" AND state IN ({_marks(expect)})"
            args += [State(s).value for s in expect]
        with self._write() as con:
            return con.execute(sql, args).rowcount > 0

    @_retrying
    def heartbeat(self, pilot_id: str, now: float) -> Record | None:
        with self._write() as con:
            con.execute("UPDATE pilots SET heartbeat = ? WHERE id = ?", (now, pilot_id))
            row = con.execute("SELECT * FROM pilots WHERE id = ?", (pilot_id,)).fetchone()
        return None if row is None else _decode(row)

    # --- units ------------------------------------------------------------------------------
    @_retrying
    def insert_units(self, records: Sequence[Mapping[str, Any]]) -> None:
        if not records:
            return
        rows = [_encode(r, UNIT_FIELDS) for r in records]
        with self._write() as con:
            # One statement per run of records that set the same fields, in submission order.
            start = 0
            while start < len(rows):
                columns = list(rows[start])
                end = start + 1
                while end < len(rows) and list(rows[end]) == columns:
                    end += 1
                sql = f"INSERT INTO units ({','.join(columns)}) VALUES ({_marks(columns)})"
                con.executemany(sql, [tuple(r.values()) for r in rows[start:end]])
                start = end

    @_retrying
    def get_units(self, ids: Sequence[str]) -> list[Record]:
        out: list[Record] = []
        con = self._con()
        for start in range(0, len(ids), 500):
            chunk = tuple(ids[start:start + 500])
            out += [_decode(r) for r in con.execute(f"SELECT * FROM units WHERE id IN ({_marks(chunk)})", chunk)]
        order = {unit_id: n for n, unit_id in enumerate(ids)}
        out.sort(key=lambda r: order[r["id"]])
        return out

    @_retrying
    def find_units(self, *, cds_id: str | None = None, pilot_id: str | None = None,
                   states: Sequence[State] | None = None, unbound: bool = False,
                   cancel_requested: bool = False, limit: int | None = None,
                   fields: Sequence[str] | None = None, constrained: bool = False) -> list[Record]:
        where, args = [], []
        indexed = ""
        if constrained:
            if cds_id is not None and unbound and states is not None and \
                    [State(s) for s in states] == [CLAIMABLE_STATE]:
                where.append(_CONSTRAINED)  # the queued ones, from their own index
                indexed = " INDEXED BY units_constrained"
            else:
                where.append("(datacenter IS NOT NULL OR machine IS NOT NULL OR input_data IS NOT NULL)")
        if cds_id is not None:
            where.append("cds_id = ?")
            args.append(cds_id)
        if pilot_id is not None:
            where.append("pilot_id = ?")
            args.append(pilot_id)
        if states is not None:
            where.append(f"state IN ({_marks(states)})")
            args += [State(s).value for s in states]
        if unbound:
            where.append("pilot_id IS NULL")
        if cancel_requested:
            where.append("cancel_requested = 1")
        columns = "*"
        if fields is not None:
            unknown = set(fields) - set(UNIT_FIELDS)
            if unknown:
                raise PilotError(f"unknown store fields {sorted(unknown)}")
            columns = ", ".join(fields)
        sql = (f"SELECT {columns} FROM units{indexed}" + (f" WHERE {' AND '.join(where)}" if where else "")
               + " ORDER BY seq")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_decode(row) for row in self._con().execute(sql, args)]

    @_retrying
    def count_active(self, pilot_ids: Sequence[str]) -> dict[str, int]:
        counts = dict.fromkeys(pilot_ids, 0)
        if pilot_ids:
            rows = self._con().execute(
                f"SELECT pilot_id, SUM(slots) FROM units WHERE pilot_id IN ({_marks(pilot_ids)})"
                f" AND state IN ({_marks(_ACTIVE)}) GROUP BY pilot_id", (*pilot_ids, *_ACTIVE))
            counts.update({row[0]: int(row[1]) for row in rows})
        return counts

    def count_units(self, *, cds_id: str | None = None, pilot_id: str | None = None) -> dict[str, int]:
        where, args = [], []
        for column, value in (("cds_id", cds_id), ("pilot_id", pilot_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        rows = self._con().execute("SELECT state, COUNT(*) FROM units" + (" WHERE " + " AND ".join(where) if where
                                                                          else "") + " GROUP BY state", args)
        return {str(state): int(count) for state, count in rows}

    @_retrying
    def update_units(self, updates: Sequence[UnitUpdate]) -> dict[str, str]:
        encoded = [(update, _encode(update.changes, UNIT_FIELDS)) for update in updates]
        if not updates:
            return {}
        with self._write() as con:
            before = states_of(con, list(dict.fromkeys(update.id for update in updates)))
            if len(before) < len(updates) or len({update.id for update in updates}) < len(updates):
                applied: dict[str, str] = {}
                for update, row in encoded:
                    if update_one(con, update, row):
                        applied.setdefault(update.id, before[update.id])
                return applied
            # a batch names each unit once: one statement per shape and chunk, not per unit
            groups: dict[tuple[Any, ...], list[tuple[UnitUpdate, dict[str, Any]]]] = {}
            for update, row in encoded:
                groups.setdefault((tuple(row), expected_states(update), update.pilot_id), []).append((update, row))
            done: set[str] = set()
            for (columns, expect, pilot_id), members in groups.items():
                per_chunk = max(1, 900 // (len(columns) + 1))
                for first in range(0, len(members), per_chunk):
                    done.update(update_many(con, columns, expect, pilot_id, members[first:first + per_chunk]))
        return {update.id: before[update.id] for update in updates if update.id in done}

    @_retrying
    def bind_units(self, bindings: Sequence[tuple[str, str]]) -> list[str]:
        by_pilot: dict[str, list[str]] = {}
        for unit_id, pilot_id in bindings:
            by_pilot.setdefault(pilot_id, []).append(unit_id)
        bound: set[str] = set()
        with self._write() as con:
            for pilot_id, unit_ids in by_pilot.items():
                for start in range(0, len(unit_ids), 500):
                    chunk = unit_ids[start:start + 500]
                    # unary + keeps the planner on the id index: with many ids it would otherwise
                    # walk every queued unit through units_pilot
                    rows = con.execute(
                        f"UPDATE units SET pilot_id = ? WHERE id IN ({_marks(chunk)}) AND +pilot_id IS NULL"
                        f" AND +state IN ({_marks(_QUEUED)}) RETURNING id", (pilot_id, *chunk, *_QUEUED)).fetchall()
                    bound.update(row[0] for row in rows)
        return [unit_id for unit_id, _ in bindings if unit_id in bound]

    @_retrying
    def unbind_units(self, pilot_id: str, ids: Sequence[str] | None = None) -> list[str]:
        sql = ("UPDATE units SET pilot_id = NULL, claimed = 0 WHERE pilot_id = ? AND cds_id IS NOT NULL"
               f" AND state IN ({_marks(_QUEUED)})")
        out: list[str] = []
        with self._write() as con:
            if ids is None:
                return [row[0] for row in con.execute(sql + " RETURNING id", (pilot_id, *_QUEUED)).fetchall()]
            for start in range(0, len(ids), 500):
                chunk = tuple(ids[start:start + 500])
                out += [row[0] for row in con.execute(sql + f" AND id IN ({_marks(chunk)}) RETURNING id",
                                                      (pilot_id, *_QUEUED, *chunk)).fetchall()]
        return out

    @_retrying
    def claim_units(self, pilot_id: str, limit: int, services: Sequence[str] = (),
                    max_slots: int | None = None) -> list[Record]:
        if limit <= 0:
            return []
        too_big = "" if max_slots is None else f" AND slots <= {int(max_slots)}"
        con = self._con()  # an idle agent asks often: look first, take the write lock only for work
        if not con.execute("SELECT 1 FROM units WHERE pilot_id = ? AND state = ? AND claimed = 0 LIMIT 1",
                           (pilot_id, CLAIMABLE_STATE.value)).fetchone() and not any(
                con.execute(f"SELECT 1 FROM units INDEXED BY units_queue WHERE cds_id = ? AND {_PLAIN}{too_big}"
                            " LIMIT 1", (cds_id,)).fetchone() for cds_id in dict.fromkeys(services)):
            return []
        with self._write() as con:
            rows = con.execute(
                "UPDATE units SET claimed = 1 WHERE seq IN (SELECT seq FROM units WHERE pilot_id = ?"
                " AND state = ? AND claimed = 0 ORDER BY seq LIMIT ?) RETURNING *",
                (pilot_id, CLAIMABLE_STATE.value, limit)).fetchall()
            left = limit - len(rows)
            if left > 0 and services:
                seqs: list[int] = []
                for cds_id in dict.fromkeys(services):
                    seqs += [row[0] for row in con.execute(
                        f"SELECT seq FROM units INDEXED BY units_queue WHERE cds_id = ? AND {_PLAIN}{too_big}"
                        " ORDER BY seq LIMIT ?", (cds_id, left))]
                seqs = sorted(seqs)[:left]
                for start in range(0, len(seqs), 500):
                    chunk = seqs[start:start + 500]
                    rows += con.execute(f"UPDATE units SET pilot_id = ?, claimed = 1 WHERE seq IN ({_marks(chunk)})"
                                        f" AND {_PLAIN_FILTER} RETURNING *", (pilot_id, *chunk)).fetchall()
        return [_decode(row) for row in sorted(rows, key=lambda row: row["seq"])]


@hookimpl
def pilot_coordination_stores() -> list[CoordinationStoreRecord]:
    """Register the embedded SQLite store for ``sqlite://``."""
    return [CoordinationStoreRecord(name="sqlite", schemes=("sqlite",), open=SQLiteStore.from_url)]
