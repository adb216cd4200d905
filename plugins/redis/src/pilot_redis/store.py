"""The Redis coordination store: ``CoordinationStore`` on redis-py, for pilots that span nodes.

Every write that must be atomic runs as one Lua script on the server (``pilot_redis.scripts``);
bulk calls travel as few round trips (scripts over thousands of records, pipelines for reads).
Every call is retried with jittered exponential backoff while the server is unreachable or
loading (``PILOT_REDIS_RETRY_SECONDS``, default 60 s); writes carry an idempotency token, so a
retry after a lost reply is not applied twice.

Agents claim work in one script call (``claim_units``): their pilot's own units, then the plain
units of their services' queues; the units with placement constraints wait in an index of their
own (``cc:<cds>``) that ``find_units(constrained=True)`` reads, so the placement policy sees them
without walking the plain queue. Indexes: see ``pilot_redis.scripts``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import redis
import tenacity
from redis.backoff import NoBackoff
from redis.retry import Retry

from pilot.errors import PilotError, StoreClosed
from pilot.log import get_logger
from pilot.states import ACTIVE_UNIT_STATES, QUEUED_UNIT_STATES, State
from pilot.store import PILOT_FIELDS, UNIT_FIELDS, Record, UnitUpdate
from pilot_redis import scripts
from pilot_redis.changes import ChangeWaiter
from pilot_redis.codec import UNIT_DEFAULTS, decode_fields, decode_pilot, decode_unit, encode
from pilot_redis.config import RedisTarget, find_password, parse_url, remember_password

T = TypeVar("T")
RETRY_ENV = "PILOT_REDIS_RETRY_SECONDS"
CHUNK = 1000  # records per script call or pipeline
#: The layout of the keys under a prefix. ``<prefix>schema`` records it (stores from before it
#: was recorded are version 0, the same layout): a newer one is refused, an older one migrated.
SCHEMA_VERSION = 1
_ACTIVE = frozenset(s.value for s in ACTIVE_UNIT_STATES)
_QUEUED = frozenset(s.value for s in QUEUED_UNIT_STATES)
_TRANSIENT = (redis.ConnectionError, redis.TimeoutError)  # BusyLoadingError is a ConnectionError


def _transient(exc: BaseException) -> bool:
    """Worth retrying: the server is unreachable, restarting or loading (a refused password is not)."""
    return isinstance(exc, _TRANSIENT) and not isinstance(exc, redis.AuthenticationError)


def _retry_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(RETRY_ENV) or 60.0))
    except ValueError:
        return 60.0


def _states(states: Sequence[State | str]) -> list[str]:
    return [State(s).value for s in states]


def _expect(expect: Sequence[State | str] | None) -> list[str]:
    if expect is None:
        return ["-1"]
    values = _states(expect)
    return [str(len(values)), *values]


class RedisStore:
    """A coordination store on one Redis database (optionally under a key prefix)."""

    def __init__(self, target: RedisTarget, password: str | None) -> None:
        self.target = target
        self.url = target.url  # never holds the password
        self._closed = False
        self._p = target.key_prefix
        self._log = get_logger(store=self.url)
        self._client = redis.Redis(
            host=target.host, port=target.port, db=target.db, username=target.username, password=password,
            ssl=target.scheme == "rediss", socket_connect_timeout=5, socket_timeout=30, socket_keepalive=True,
            health_check_interval=30, retry=Retry(NoBackoff(), 0))
        self._scripts = {name: self._client.register_script(getattr(scripts, name)) for name in (
            "INSERT_UNITS", "UPDATE_UNITS", "BIND_UNITS", "UNBIND_UNITS", "CLAIM_UNITS", "COUNT_ACTIVE",
            "FIND_UNITS", "COUNT_UNITS", "INSERT_PILOT", "UPDATE_PILOT", "HEARTBEAT", "LINK")}
        self._changes = ChangeWaiter(self._client, f"{self._p}changes")
        self._call(self._client.ping)
        self._check_schema()

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        """Open ``redis://[:password@]host:port/db[?prefix=name]``; a password in the URL is
        remembered in the credentials file for processes that get the redacted URL."""
        target = parse_url(url)
        store = cls(target, target.password or find_password(target))  # connects: a wrong password fails here
        if target.password:
            remember_password(target)  # only a password the server accepted
        return store

    def close(self) -> None:
        """Release the connections; later calls raise ``StoreClosed``."""
        self._closed = True
        self._changes.close()
        self._client.close()

    def _check_schema(self) -> None:
        """Record the schema version under the prefix, or refuse a store of another layout."""
        key = f"{self._p}schema"
        self._call(lambda: self._client.set(key, SCHEMA_VERSION, nx=True))
        raw = self._call(lambda: self._client.get(key))
        try:
            version = int(raw if raw is not None else "")
        except (TypeError, ValueError):
            raise PilotError(f"Redis store {self.url}: key {key!r} holds {raw!r}, not a pilot schema version; "
                             "this prefix is used by another program: give another ?prefix=") from None
        if version > SCHEMA_VERSION:
            raise PilotError(f"Redis store {self.url} has schema version {version}, newer than this pilot's "
                             f"{SCHEMA_VERSION}: upgrade pilot-redis, or give another ?prefix=")
        if version < SCHEMA_VERSION:  # version 0 had the same layout: only the mark is new
            self._call(lambda: self._client.set(key, SCHEMA_VERSION))

    # --- plumbing ---------------------------------------------------------------------------
    def _call(self, func: Callable[[], T], *, retry: bool = True) -> T:
        """Run ``func`` with retries (unless not ``retry``) while the server is unreachable;
        errors as ``PilotError``."""
        if self._closed:
            raise StoreClosed(f"the coordination store {self.url} is closed")
        limit = _retry_seconds() if retry else 0.0

        def warn(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self._log.warning("redis unreachable; retrying", attempt=state.attempt_number, error=str(exc))

        try:
            try:  # the first attempt without tenacity's set-up (about 15 µs a call): most succeed
                return func()
            except Exception as exc:
                if not (limit and _transient(exc)):
                    raise
            retrying = tenacity.Retrying(
                retry=tenacity.retry_if_exception(_transient),
                wait=tenacity.wait_random_exponential(multiplier=0.05, max=2.0),
                stop=tenacity.stop_after_delay(limit), before_sleep=warn, reraise=True)
            return retrying(func)
        except redis.AuthenticationError as exc:
            raise PilotError(f"Redis store {self.url}: authentication failed ({exc}); give the password in "
                             "the URL once, or set PILOT_REDIS_PASSWORD", key="coordination_url") from None
        except redis.ResponseError as exc:
            if "NOAUTH" not in str(exc) and "WRONGPASS" not in str(exc):
                raise PilotError(f"Redis store {self.url}: {exc}") from exc
            raise PilotError(f"Redis store {self.url}: authentication failed ({exc})", key="coordination_url") from None
        except _TRANSIENT as exc:
            during = f" for {limit:g} s" if limit else ""
            raise PilotError(f"Redis store {self.url} unreachable{during}: {exc}") from exc
        except redis.RedisError as exc:
            raise PilotError(f"Redis store {self.url}: {exc}") from exc

    def _script(self, name: str, *args: Any, token: bool | str = False) -> Any:
        """Run a script with the prefix and (for writes) one idempotency token for all retries
        (a new one, or the one given)."""
        tok = token if isinstance(token, str) else uuid.uuid4().hex if token else ""
        argv = [self._p, tok, *args]
        script = self._scripts[name]
        return self._call(lambda: script(args=argv))

    def _changed(self, pipe: redis.client.Pipeline) -> None:
        """Queue the change count's increment and its message (see ``wait_for_change``)."""
        pipe.incr(self._changes.key)
        pipe.publish(self._changes.key, b"")

    def _write(self, command: Callable[[redis.client.Pipeline], object]) -> None:
        """One write and the change it makes, in one MULTI/EXEC, with the retries of ``_call``."""
        def run() -> None:
            with self._client.pipeline(transaction=True) as pipe:
                command(pipe)
                self._changed(pipe)
                pipe.execute()

        self._call(run)

    def wait_for_change(self, since: int | None, timeout: float) -> int:
        """The count of changes (see ``CoordinationStore``), blocking on their channel
        (``pilot_redis.changes``); a failure raises at once, without retries."""
        return self._call(lambda: self._changes.wait(since, timeout), retry=False)

    def _hgetall(self, keys: Sequence[str]) -> list[dict[bytes, bytes]]:
        def run() -> list[dict[bytes, bytes]]:
            out: list[dict[bytes, bytes]] = []
            with self._client.pipeline(transaction=False) as pipe:
                for start in range(0, len(keys), CHUNK):
                    for key in keys[start:start + CHUNK]:
                        pipe.hgetall(key)
                    out += pipe.execute()
            return out

        return self._call(run) if keys else []

    @staticmethod
    def _ids(raw: Any) -> list[str]:
        return [item.decode() for item in raw]

    # --- services ---------------------------------------------------------------------------
    def put_service(self, service_id: str, kind: str, data: Mapping[str, Any]) -> None:
        """Create or replace a service record."""
        doc = json.dumps({"kind": kind, "data": dict(data)})
        self._write(lambda pipe: pipe.set(f"{self._p}s:{service_id}", doc))

    @staticmethod
    def _service(service_id: str, raw: Any) -> Record | None:
        if raw is None:
            return None
        doc = json.loads(raw)
        return {"id": service_id, "kind": doc["kind"], "data": doc["data"]}

    def get_service(self, service_id: str) -> Record | None:
        """A service record, or None."""
        return self._service(service_id, self._call(lambda: self._client.get(f"{self._p}s:{service_id}")))

    def get_services(self, ids: Sequence[str]) -> list[Record]:
        """Service records by id, in the order asked, missing ones left out."""
        if not ids:
            return []
        raw = self._call(lambda: self._client.mget([f"{self._p}s:{i}" for i in ids]))
        return [rec for i, r in zip(ids, raw, strict=True) if (rec := self._service(i, r)) is not None]

    def find_services(self, kinds: Sequence[str] | None = None) -> list[Record]:
        """Every service record (of ``kinds``), found by SCAN over the service keys."""
        prefix = f"{self._p}s:"

        def scan() -> list[str]:
            return [key.decode()[len(prefix):] for key in self._client.scan_iter(match=f"{prefix}*", count=10_000)]

        ids = sorted(set(self._call(scan)))
        records = [r for start in range(0, len(ids), CHUNK) for r in self.get_services(ids[start:start + CHUNK])]
        return records if kinds is None else [r for r in records if r["kind"] in kinds]

    def update_service(self, service_id: str, changes: Mapping[str, Any],
                       expect: Sequence[State] | None = None) -> bool:
        """Merge ``changes`` into the record's data while its state is expected (WATCH/MULTI)."""
        key = f"{self._p}s:{service_id}"
        wanted = None if expect is None else set(_states(expect))
        values = {k: v.value if isinstance(v, State) else v for k, v in changes.items()}

        def run() -> bool:
            with self._client.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(key)  # type: ignore[no-untyped-call]
                        raw = pipe.get(key)
                        if raw is None:
                            return False
                        doc = json.loads(raw)
                        if wanted is not None and doc["data"].get("state") not in wanted:
                            return False
                        doc["data"].update(values)
                        pipe.multi()
                        pipe.set(key, json.dumps(doc))
                        self._changed(pipe)
                        pipe.execute()
                        return True
                    except redis.WatchError:
                        continue

        return self._call(run)

    def link(self, parent: str, child: str) -> None:
        """Record that ``parent`` uses ``child``."""
        self._script("LINK", parent, child)

    def unlink(self, parent: str, child: str) -> None:
        """Remove a link."""
        self._write(lambda pipe: pipe.zrem(f"{self._p}l:{parent}", child))

    def children(self, parent: str) -> list[str]:
        """Services linked under ``parent``, in link order."""
        return self._ids(self._call(lambda: self._client.zrange(f"{self._p}l:{parent}", 0, -1)))

    # --- pilots -----------------------------------------------------------------------------
    def insert_pilot(self, record: Mapping[str, Any]) -> None:
        """Insert a new pilot."""
        pairs, _ = encode(record, PILOT_FIELDS)
        if not record.get("id"):
            raise PilotError("a pilot record needs an id")
        if not self._script("INSERT_PILOT", record["id"], record.get("service_id") or "", *pairs):
            raise PilotError(f"pilot {record['id']} already exists in {self.url}")

    def _pilots_by_key(self, ids: Sequence[str]) -> list[Record]:
        found = [raw for raw in self._hgetall([f"{self._p}p:{i}" for i in ids]) if raw]
        found.sort(key=lambda raw: int(raw[b"seq"]))
        return [decode_pilot(raw) for raw in found]

    def get_pilots(self, ids: Sequence[str]) -> list[Record]:
        """Pilots by id (missing ones left out), oldest first."""
        return self._pilots_by_key(ids)

    def pilots_of(self, service_ids: Sequence[str]) -> list[Record]:
        """Every pilot of these services, oldest first."""
        if not service_ids:
            return []

        def run() -> list[Any]:
            with self._client.pipeline(transaction=False) as pipe:
                for sid in service_ids:
                    pipe.zrange(f"{self._p}ps:{sid}", 0, -1)
                return pipe.execute()

        ids = list(dict.fromkeys(i.decode() for group in self._call(run) for i in group))
        return self._pilots_by_key(ids)

    def find_pilots(self, states: Sequence[State] | None = None) -> list[Record]:
        """Every pilot (in one of ``states`` when given), oldest first."""
        ids = self._ids(self._call(lambda: self._client.zrange(f"{self._p}pilots", 0, -1)))
        pilots = self._pilots_by_key(ids)
        if states is None:
            return pilots
        wanted = set(_states(states))
        return [p for p in pilots if p["state"] in wanted]

    def update_pilot(self, pilot_id: str, changes: Mapping[str, Any],
                     expect: Sequence[State] | None = None) -> bool:
        """Apply ``changes`` while the pilot's state is expected; True when applied."""
        if "id" in changes:
            raise PilotError("a pilot's id cannot change")
        pairs, deletes = encode(changes, PILOT_FIELDS)
        answer = self._script("UPDATE_PILOT", pilot_id, *_expect(expect), len(pairs) // 2, *pairs,
                              len(deletes), *deletes, token=True)
        return bool(answer) and answer[0] == b"1"

    def heartbeat(self, pilot_id: str, now: float) -> Record | None:
        """Record the heartbeat; return the pilot."""
        raw = self._script("HEARTBEAT", pilot_id, repr(float(now)))
        return decode_pilot(raw) if raw else None

    # --- units ------------------------------------------------------------------------------
    def insert_units(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Insert many units in one MULTI/EXEC transaction: all of them or none."""
        if not records:
            return
        chunks: list[list[Any]] = []
        for start in range(0, len(records), CHUNK):
            units = []
            for record in records[start:start + CHUNK]:
                pairs, _ = encode(record, UNIT_FIELDS)
                if not record.get("id"):
                    raise PilotError("a unit record needs an id")
                units.append((record["id"], pairs))
            chunks.append([self._p, "", json.dumps(units, separators=(",", ":"), ensure_ascii=False)])
        script = self._scripts["INSERT_UNITS"]

        def run() -> None:
            with self._client.pipeline(transaction=True) as pipe:
                for args in chunks:
                    script(args=args, client=pipe)  # EVALSHA inside the one MULTI/EXEC
                pipe.execute()

        self._call(run)

    def get_units(self, ids: Sequence[str]) -> list[Record]:
        """Units by id, in the order asked (missing ones left out)."""
        return [decode_unit(raw) for raw in self._hgetall([f"{self._p}u:{i}" for i in ids]) if raw]

    def _index(self, cds_id: str | None, pilot_id: str | None, states: Sequence[str] | None,
               unbound: bool, constrained: bool) -> str:
        """The smallest index that holds every unit the filters can match."""
        active = states is not None and set(states) <= _ACTIVE
        queued = states is not None and set(states) <= _QUEUED
        if pilot_id is not None:
            return f"{self._p}pa:{pilot_id}" if active else f"{self._p}pu:{pilot_id}"
        if cds_id is not None:
            if unbound and queued:
                return f"{self._p}cc:{cds_id}" if constrained else f"{self._p}cf:{cds_id}"
            return f"{self._p}ca:{cds_id}" if active else f"{self._p}cu:{cds_id}"
        return f"{self._p}all"  # the core always filters by service or pilot: no index of its own

    def find_units(self, *, cds_id: str | None = None, pilot_id: str | None = None,
                   states: Sequence[State] | None = None, unbound: bool = False,
                   cancel_requested: bool = False, limit: int | None = None,
                   fields: Sequence[str] | None = None, constrained: bool = False) -> list[Record]:
        """Units matching every filter, in submission order; only ``fields`` when given;
        ``constrained``: only units with an affinity label or ``input_data``."""
        if fields is not None:
            unknown = set(fields) - set(UNIT_FIELDS)
            if unknown:
                raise PilotError(f"unknown store fields {sorted(unknown)}")
            fields = list(fields)
        wanted = None if states is None else _states(states)
        if limit is not None and int(limit) <= 0:
            return []
        index = self._index(cds_id, pilot_id, wanted, unbound, constrained)
        raw = self._script("FIND_UNITS", index, cds_id or "", pilot_id or "",
                           "-" if wanted is None else ",".join(wanted), int(unbound), int(cancel_requested),
                           -1 if limit is None else int(limit), int(constrained), *(fields or ()))
        if fields:
            return [decode_fields(values, fields, UNIT_DEFAULTS) for values in raw]
        return [decode_unit(flat) for flat in raw]

    def count_active(self, pilot_ids: Sequence[str]) -> dict[str, int]:
        """Slots held by unfinished units bound to each pilot."""
        if not pilot_ids:
            return {}
        sums = self._script("COUNT_ACTIVE", *pilot_ids)
        return {pid: int(total) for pid, total in zip(pilot_ids, sums, strict=True)}

    def count_units(self, *, cds_id: str | None = None, pilot_id: str | None = None) -> dict[str, int]:
        """Units by state, counted in one script over the smallest index that holds them."""
        index = self._index(cds_id, pilot_id, None, False, False)
        flat = self._script("COUNT_UNITS", index, cds_id or "", pilot_id or "")
        return {bytes(flat[i]).decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}

    def update_units(self, updates: Sequence[UnitUpdate]) -> dict[str, str]:
        """Apply conditional updates (atomic per chunk of 1000); return, for each unit where an
        update applied, its state before the call, in the order of ``updates``."""
        applied: dict[str, str] = {}
        for start in range(0, len(updates), CHUNK):
            args: list[Any] = [0]
            for update in updates[start:start + CHUNK]:
                if "id" in update.changes:
                    raise PilotError("a unit's id cannot change")
                pairs, deletes = encode(update.changes, UNIT_FIELDS)
                args += (update.id, update.pilot_id or "", *_expect(update.expect), len(pairs) // 2, *pairs,
                         len(deletes), *deletes)
                args[0] += 1
            flat = self._ids(self._script("UPDATE_UNITS", *args, token=True))
            for unit_id, old in zip(flat[::2], flat[1::2], strict=True):
                applied.setdefault(unit_id, old)  # named in two chunks: the state before the first
        return applied

    def bind_units(self, bindings: Sequence[tuple[str, str]]) -> list[str]:
        """Bind queued, unbound units to pilots; return those bound."""
        bound: list[str] = []
        for start in range(0, len(bindings), CHUNK):
            flat = [item for pair in bindings[start:start + CHUNK] for item in pair]
            bound += self._ids(self._script("BIND_UNITS", *flat, token=True))
        return bound

    def unbind_units(self, pilot_id: str, ids: Sequence[str] | None = None) -> list[str]:
        """Hand the pilot's never-started service units (only those in ``ids`` when given) back
        to their service, unbound and unclaimed; return their ids."""
        if ids is None:
            return self._ids(self._script("UNBIND_UNITS", pilot_id, "*", token=True))
        given: list[str] = []
        for start in range(0, len(ids), CHUNK):
            given += self._ids(self._script("UNBIND_UNITS", pilot_id, *ids[start:start + CHUNK], token=True))
        return given

    def claim_units(self, pilot_id: str, limit: int, services: Sequence[str] = (),
                    max_slots: int | None = None) -> list[Record]:
        """Atomically claim up to ``limit`` Pending units, oldest first: the pilot's own, then
        plain unbound units of ``services`` needing at most ``max_slots`` slots, bound to it."""
        if limit <= 0:
            return []
        raw = self._script("CLAIM_UNITS", pilot_id, int(limit), -1 if max_slots is None else int(max_slots),
                           scripts.CLAIM_SCAN, *dict.fromkeys(services), token=True)
        return self._claimed(raw)

    def _claimed(self, raw: Any) -> list[Record]:
        """The records of a claim's answer: HGETALLs, or ids when a retry was answered from its token."""
        if raw and not isinstance(raw[0], list):
            return self.get_units(self._ids(raw))
        return [decode_unit(flat) for flat in raw]


def open_store(url: str) -> RedisStore:
    """Open the store at ``url``."""
    return RedisStore.from_url(url)
