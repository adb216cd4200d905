"""In-memory state of the EMULATED Kubernetes API server (an emulation for tests, not Kubernetes).

One store for every resource, a cluster-wide ``resourceVersion`` counter, an event log that
watches resume from (until :meth:`ClusterState.expire_watches` compacts it: resuming from an
older version then gets ``410 Gone``), and deletion with owner references the way the real
garbage collector does it (``Orphan``, ``Background``, ``Foreground``; graceful deletion of
running Pods is finished by the test kubelet). Controllers and the kubelet change objects
through :meth:`ClusterState.mutate`, which bumps the version and wakes watchers like any write.
"""

from __future__ import annotations

import bisect
import copy
import secrets as random_tokens
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .defaults import DEFAULTS, string_data
from .objects import (
    RESOURCES,
    ApiError,
    Obj,
    already_exists,
    check_name,
    field_selector_matches,
    invalid,
    json_patch,
    label_selector_matches,
    merge_patch,
    not_found,
    now,
)

NAMESPACES = ("default", "other", "kube-system")
MAX_EVENTS = 50_000
Key = tuple[str, str, str]


@dataclass(frozen=True)
class Event:
    """One change as a watch reports it."""

    rv: int
    type: str
    resource: str
    obj: Obj


def owners(obj: Obj) -> list[str]:
    """The uids ``obj``'s ownerReferences point to."""
    return [ref["uid"] for ref in obj["metadata"].get("ownerReferences") or [] if "uid" in ref]


class ClusterState:
    """Objects, versions and watches of the emulated API server (not Kubernetes)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._objects: dict[Key, Obj] = {}
        self._rv = 1
        self._events: list[Event] = []
        self._compacted = 0  # resuming from an older version gets 410
        self._epoch = 0
        self._closed = False
        self._collecting = False
        self.generation = 0

    # --- reading ---------------------------------------------------------------------------

    def get(self, resource: str, namespace: str, name: str) -> Obj:
        """A copy of one object, or 404."""
        with self._cond:
            obj = self._objects.get((resource, namespace, name))
            if obj is None:
                raise not_found(resource, name)
            return copy.deepcopy(obj)

    def list_objects(
        self, resource: str, namespace: str | None, labels: str | None = None, fields: str | None = None
    ) -> tuple[list[Obj], str]:
        """Copies of the matching objects (by namespace and name) and the list's resourceVersion."""
        with self._cond:
            items = [copy.deepcopy(obj) for obj in self._select(resource, namespace, labels, fields)]
            return items, str(self._rv)

    def _select(self, resource: str, namespace: str | None, labels: str | None, fields: str | None) -> list[Obj]:
        found = [
            obj for (kind, ns, _), obj in sorted(self._objects.items()) if kind == resource and namespace in (None, ns)
        ]
        return [
            obj
            for obj in found
            if label_selector_matches(labels, obj["metadata"].get("labels")) and field_selector_matches(fields, obj)
        ]

    def dependents(self, uid: str) -> list[tuple[str, Obj]]:
        """(resource, copy) of every object with an ownerReference to ``uid``."""
        with self._cond:
            return [(key[0], copy.deepcopy(obj)) for key, obj in self._objects.items() if uid in owners(obj)]

    # --- writing ---------------------------------------------------------------------------

    def _emit(self, kind: str, resource: str, obj: Obj) -> None:
        self._events.append(Event(int(obj["metadata"]["resourceVersion"]), kind, resource, copy.deepcopy(obj)))
        if len(self._events) > MAX_EVENTS:
            dropped = self._events[: len(self._events) - MAX_EVENTS]
            del self._events[: len(dropped)]
            self._compacted = dropped[-1].rv
        self.generation += 1
        self._cond.notify_all()

    def _bump(self, obj: Obj) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)

    def create(self, resource: str, namespace: str, body: Obj) -> Obj:
        """Create an object like the real server: defaults, uid, version, 409 on a taken name."""
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if namespace not in NAMESPACES:
            raise ApiError(
                404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
            )
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + random_tokens.token_hex(3)[:5]
        name = meta.get("name") or ""
        if not name:
            raise invalid(resource, "", "metadata.name", "Required value: name or generateName is required")
        check_name(resource, name)
        group, kind = RESOURCES[resource]
        obj["apiVersion"] = f"{group}/v1" if group else "v1"
        obj["kind"] = kind
        for stale in ("resourceVersion", "uid", "deletionTimestamp", "creationTimestamp"):
            meta.pop(stale, None)
        meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=now())
        if resource != "secrets":
            meta["generation"] = 1
        DEFAULTS[resource](obj)
        with self._cond:
            if (resource, namespace, name) in self._objects:
                raise already_exists(resource, name)
            self._bump(obj)
            self._objects[(resource, namespace, name)] = obj
            self._emit("ADDED", resource, obj)
            return copy.deepcopy(obj)

    def mutate(self, resource: str, namespace: str, name: str, change: Callable[[Obj], None]) -> Obj:
        """Apply ``change`` to the stored object; a real change bumps its version and wakes watchers."""
        with self._cond:
            obj = self._objects.get((resource, namespace, name))
            if obj is None:
                raise not_found(resource, name)
            edited = copy.deepcopy(obj)
            change(edited)
            if resource == "secrets":
                string_data(edited)
            if edited != obj:
                if edited.get("spec") != obj.get("spec") and "generation" in edited["metadata"]:
                    edited["metadata"]["generation"] += 1
                self._bump(edited)
                self._objects[(resource, namespace, name)] = edited
                self._emit("MODIFIED", resource, edited)
            return copy.deepcopy(edited)

    def replace(self, resource: str, namespace: str, name: str, body: Obj, subresource: str | None) -> Obj:
        """PUT: the whole object (status kept) or only its status; 409 on a stale resourceVersion."""
        with self._cond:
            current = self.get(resource, namespace, name)
            sent = body.get("metadata", {}).get("resourceVersion")
            if sent and sent != current["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                )

            def change(obj: Obj) -> None:
                if subresource == "status":
                    obj["status"] = copy.deepcopy(body.get("status", {}))
                    return
                for key, value in body.items():
                    if key not in ("status", "metadata", "apiVersion", "kind"):
                        obj[key] = copy.deepcopy(value)
                for key in ("labels", "annotations", "finalizers", "ownerReferences"):
                    if key in body.get("metadata", {}):
                        obj["metadata"][key] = copy.deepcopy(body["metadata"][key])

            return self.mutate(resource, namespace, name, change)

    def patch(self, resource: str, namespace: str, name: str, body: Obj, subresource: str | None) -> Obj:
        """PATCH with a merge patch (strategic merge patches are treated as merge patches here)."""

        def change(obj: Obj) -> None:
            if subresource == "status":
                obj["status"] = merge_patch(obj.get("status", {}), body.get("status", {}))
                return
            patched = merge_patch(obj, {k: v for k, v in body.items() if k != "status"})
            for key in ("uid", "name", "namespace", "resourceVersion", "creationTimestamp"):
                patched["metadata"][key] = obj["metadata"][key]
            obj.clear()
            obj.update(patched)

        return self.mutate(resource, namespace, name, change)

    def json_patch(self, resource: str, namespace: str, name: str, operations: list[Any], sub: str | None) -> Obj:
        """PATCH with an RFC 6902 JSON patch (on the status only for the status subresource)."""

        def change(obj: Obj) -> None:
            patched = json_patch(obj, operations)
            if sub == "status":
                obj["status"] = patched.get("status", {})
                return
            for key in ("uid", "name", "namespace", "resourceVersion", "creationTimestamp"):
                patched["metadata"][key] = obj["metadata"][key]
            patched["status"] = obj.get("status", {})
            obj.clear()
            obj.update(patched)

        return self.mutate(resource, namespace, name, change)

    def delete(self, resource: str, namespace: str, name: str, propagation: str | None, grace: int | None) -> Obj:
        """DELETE: what the real API server and garbage collector do; returns the last state.

        Jobs default to ``Orphan`` (as batch/v1 does); running Pods get a deletionTimestamp and
        are removed by the kubelet once their process is gone.
        """
        with self._cond:
            obj = self.get(resource, namespace, name)
            meta = obj["metadata"]
            if meta.get("deletionTimestamp"):
                return obj
            policy = propagation or ("Orphan" if resource == "jobs" else "Background")
            if policy not in ("Orphan", "Background", "Foreground"):
                raise ApiError(400, "BadRequest", f'unsupported propagationPolicy "{policy}"')
            uid = meta["uid"]
            if policy == "Orphan":
                for kind, dependent in self.dependents(uid):
                    ns, dep_name = dependent["metadata"]["namespace"], dependent["metadata"]["name"]
                    self.mutate(kind, ns, dep_name, lambda o: _drop_owner(o, uid))
            running_pod = (
                resource == "pods"
                and obj.get("spec", {}).get("nodeName")
                and obj.get("status", {}).get("phase") in ("Pending", "Running")
                and grace != 0
            )
            finalizers = list(meta.get("finalizers") or [])
            if policy == "Foreground":
                finalizers.append("foregroundDeletion")
            if running_pod or finalizers:

                def mark(o: Obj) -> None:
                    o["metadata"]["deletionTimestamp"] = now()
                    default = o.get("spec", {}).get("terminationGracePeriodSeconds", 30)
                    o["metadata"]["deletionGracePeriodSeconds"] = default if grace is None else grace
                    if finalizers:
                        o["metadata"]["finalizers"] = finalizers

                obj = self.mutate(resource, namespace, name, mark)
            else:
                self.remove(resource, namespace, name)
            if policy != "Orphan":
                self.collect_garbage()
            return obj

    def remove(self, resource: str, namespace: str, name: str) -> None:
        """Take an object out for good (a DELETED event); no-op if it is already gone."""
        with self._cond:
            obj = self._objects.pop((resource, namespace, name), None)
            if obj is not None:
                self._bump(obj)
                self._emit("DELETED", resource, obj)

    def collect_garbage(self) -> None:
        """Delete dependents of deleted owners; finish Foreground deletions with no dependents left."""
        with self._cond:
            if self._collecting:  # a deletion below calls back here: the running pass covers it
                return
            self._collecting = True
            try:
                while self._collect_once():
                    pass
            finally:
                self._collecting = False

    def _collect_once(self) -> bool:
        uids = {obj["metadata"]["uid"] for obj in self._objects.values()}
        for key, obj in list(self._objects.items()):
            if self._objects.get(key) is not obj:
                continue  # changed or removed earlier in this pass
            meta = obj["metadata"]
            refs = owners(obj)
            try:
                if refs and not any(ref in uids for ref in refs) and not meta.get("deletionTimestamp"):
                    self.delete(*key, "Background", None)
                    return True
                if meta.get("deletionTimestamp") and meta.get("finalizers") == ["foregroundDeletion"]:
                    if not self.dependents(meta["uid"]):
                        self.remove(*key)
                        return True
                    for kind, dependent in self.dependents(meta["uid"]):
                        dmeta = dependent["metadata"]
                        if not dmeta.get("deletionTimestamp"):
                            self.delete(kind, dmeta["namespace"], dmeta["name"], "Background", None)
                            return True
            except ApiError:
                return True  # gone meanwhile: look again
        return False

    # --- watching --------------------------------------------------------------------------

    def watch(
        self,
        resource: str,
        namespace: str | None,
        *,
        labels: str | None = None,
        fields: str | None = None,
        resource_version: str | None = None,
        timeout: float = 1800.0,
        alive: Callable[[], bool] = lambda: True,
        bookmarks: bool = False,
    ) -> Iterator[Obj]:
        """Watch events as dicts ``{"type", "object"}``, ending at the timeout, on expiry or stop.

        Without a resourceVersion (or "0") the current objects come first as ADDED; a version
        older than the last compaction gets one ERROR event with a 410 ``Expired`` Status.
        ``alive`` is asked about once a second while idle; False ends the watch. With
        ``bookmarks`` a watch that times out ends with a BOOKMARK carrying the current version.
        """
        with self._cond:
            if resource_version in (None, "", "0"):
                cursor = self._rv
                initial = [
                    {"type": "ADDED", "object": copy.deepcopy(o)}
                    for o in self._select(resource, namespace, labels, fields)
                ]
            else:
                try:
                    cursor = int(str(resource_version))
                except ValueError:
                    raise ApiError(400, "BadRequest", f'invalid resource version "{resource_version}"') from None
                if cursor < self._compacted:
                    gone = ApiError(410, "Expired", f"too old resource version: {cursor} ({self._compacted})")
                    return iter([{"type": "ERROR", "object": gone.status()}])
                initial = []
            return self._stream(
                initial,
                cursor=cursor,
                epoch=self._epoch,
                deadline=time.monotonic() + timeout,
                alive=alive,
                bookmark=_bookmark(resource) if bookmarks else None,
                wanted=lambda event: (
                    event.resource == resource
                    and namespace in (None, event.obj["metadata"]["namespace"])
                    and label_selector_matches(labels, event.obj["metadata"].get("labels"))
                    and field_selector_matches(fields, event.obj)
                ),
            )

    def _stream(
        self,
        initial: list[Obj],
        *,
        cursor: int,
        epoch: int,
        deadline: float,
        alive: Callable[[], bool],
        wanted: Callable[[Event], bool],
        bookmark: Obj | None,
    ) -> Iterator[Obj]:
        yield from initial
        while True:
            with self._cond:
                while True:
                    if self._closed or self._epoch != epoch:
                        return
                    start = bisect.bisect_right(self._events, cursor, key=lambda event: event.rv)
                    fresh = self._events[start:]
                    if fresh:
                        cursor = fresh[-1].rv
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(min(left, 1.0))
                    if not alive():
                        return
                batch = [{"type": event.type, "object": event.obj} for event in fresh if wanted(event)]
                version = str(self._rv)
            yield from batch
            if not fresh:  # timed out: a last BOOKMARK (if asked for) tells where to resume
                if bookmark is not None:
                    yield {"type": "BOOKMARK", "object": {**bookmark, "metadata": {"resourceVersion": version}}}
                return

    def expire_watches(self) -> None:
        """End every open watch and compact history: resuming from any version seen so far gets 410."""
        with self._cond:
            self._rv += 1
            self._compacted = self._rv
            self._events.clear()
            self._epoch += 1
            self.generation += 1
            self._cond.notify_all()

    def wait_for_change(self, seen: int, timeout: float) -> int:
        """Block until the state changes after generation ``seen`` (or timeout); the new generation."""
        with self._cond:
            if self.generation == seen and not self._closed:
                self._cond.wait(timeout)
            return self.generation

    def close(self) -> None:
        """End every watch (the server is stopping)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed


def _bookmark(resource: str) -> Obj:
    group, kind = RESOURCES[resource]
    return {"kind": kind, "apiVersion": f"{group}/v1" if group else "v1"}


def _drop_owner(obj: Obj, uid: str) -> None:
    refs = [ref for ref in obj["metadata"].get("ownerReferences") or [] if ref.get("uid") != uid]
    obj["metadata"]["ownerReferences"] = refs or None
    if not refs:
        obj["metadata"].pop("ownerReferences")
