"""Globus Transfer tasks: submitted once, waited on, judged.

A batch of files is one task. Its ``submission_id`` is fetched once per batch and kept until
the task has ended, so a submission retried (by globus-sdk after a 5xx, or by the core after a
lost answer) names the same task and never runs twice. The task is polled with a growing
interval (a few calls however long it runs), ``SUCCEEDED`` returns, ``FAILED`` raises with the
task's fatal error and error events, and a task still ``ACTIVE`` past the timeout is canceled
and raises with its ``nice_status``.
"""

from __future__ import annotations

import datetime
import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pilot.errors import PilotError
from pilot_globus.auth import GlobusAuth

if TYPE_CHECKING:
    import globus_sdk

FIRST_POLL = 0.1
MAX_POLL = 5.0
LABEL = "pilot"


class Tasks:
    """Submits and waits on Transfer and delete tasks for one backend."""

    def __init__(self, auth: GlobusAuth) -> None:
        self.auth = auth
        self._lock = threading.Lock()
        self._submissions: dict[str, str] = {}

    def transfer(self, src: str, dst: str, items: Sequence[tuple[str, str]], timeout: float) -> dict[str, Any]:
        """Copy ``(src_path, dst_path)`` items from collection ``src`` to ``dst`` in one task,
        checksums verified, files already identical skipped; the finished task document."""
        import globus_sdk

        def build(submission_id: str, deadline: str) -> globus_sdk.TransferData:
            data = globus_sdk.TransferData(source_endpoint=src, destination_endpoint=dst, label=LABEL,
                                           sync_level="checksum", verify_checksum=True, submission_id=submission_id,
                                           deadline=deadline, fail_on_quota_errors=True)
            for src_path, dst_path in items:
                data.add_item(src_path, dst_path)
            return data

        key = _key("transfer", src, dst, items)
        return self._run(key, [src, dst], timeout, lambda tc, sid, dl: tc.submit_transfer(build(sid, dl)),
                         f"copying {len(items)} file(s) from collection {src} to {dst}")

    def delete(self, collection: str, paths: Sequence[str], timeout: float) -> dict[str, Any]:
        """Remove ``paths`` (recursively; missing ones are fine) in one delete task."""
        import globus_sdk

        def submit(tc: globus_sdk.TransferClient, submission_id: str, deadline: str) -> globus_sdk.GlobusHTTPResponse:
            data = globus_sdk.DeleteData(endpoint=collection, recursive=True, ignore_missing=True, label=LABEL,
                                         submission_id=submission_id, deadline=deadline)
            for path in paths:
                data.add_item(path)
            return tc.submit_delete(data)

        return self._run(_key("delete", collection, collection, [(p, "") for p in paths]), [collection], timeout,
                         submit, f"removing {', '.join(paths)} on collection {collection}")

    def _run(self, key: str, collections: list[str], timeout: float,
             submit: Callable[[globus_sdk.TransferClient, str, str], Any], what: str) -> dict[str, Any]:
        with self._lock:
            submission_id = self._submissions.get(key)
        if submission_id is None:
            submission_id = self.auth.call(collections, lambda tc: str(tc.get_submission_id()["value"]))
            with self._lock:
                submission_id = self._submissions.setdefault(key, submission_id)
        deadline = (datetime.datetime.now(datetime.UTC)
                    + datetime.timedelta(seconds=timeout + 60)).isoformat(timespec="seconds")
        answer = self.auth.call(collections, lambda tc: submit(tc, submission_id, deadline))
        task_id = str(answer["task_id"])
        try:
            return self.wait(task_id, collections, timeout, what)
        finally:
            with self._lock:
                self._submissions.pop(key, None)

    def wait(self, task_id: str, collections: list[str], timeout: float, what: str) -> dict[str, Any]:
        """Poll task ``task_id`` until it ends; raise ``PilotError`` unless it SUCCEEDED."""
        deadline = time.monotonic() + timeout
        delay = FIRST_POLL
        while True:
            task: Mapping[str, Any] = self.auth.call(collections, lambda tc: tc.get_task(task_id).data)
            status = task.get("status")
            if status == "SUCCEEDED":
                return dict(task)
            if status == "FAILED":
                raise PilotError(f"{what}: Globus task {task_id} FAILED{self._why(task, collections)}")
            left = deadline - time.monotonic()
            if left <= 0:
                self.auth.call(collections, lambda tc: tc.cancel_task(task_id))
                raise PilotError(f"{what}: Globus task {task_id} still {status} after {timeout:g} s "
                                 f"(nice_status {task.get('nice_status')}); canceled it")
            time.sleep(min(delay, left))
            delay = min(delay * 2, MAX_POLL)

    def _why(self, task: Mapping[str, Any], collections: list[str]) -> str:
        """``: <fatal error>; events: <error events>`` of a failed task."""
        parts = []
        fatal = task.get("fatal_error") or {}
        if fatal:
            parts.append(f"{fatal.get('code')}: {fatal.get('description')}")
        task_id = str(task["task_id"])
        events = self.auth.call(collections, lambda tc: list(tc.task_event_list(
            task_id, limit=10, query_params={"filter": "is_error:1"})))
        described = [f"{e.get('code')}: {e.get('description')}" + (f" ({e['details']})" if e.get("details") else "")
                     for e in events]
        if described:
            parts.append("events: " + "; ".join(described))
        return ": " + "; ".join(parts) if parts else ""


def _key(kind: str, src: str, dst: str, items: Sequence[tuple[str, str]]) -> str:
    """What identifies a batch, so the same batch retried reuses its submission id."""
    digest = hashlib.sha256(f"{kind}\0{src}\0{dst}".encode())
    for a, b in items:
        digest.update(f"\0{a}\0{b}".encode())
    return digest.hexdigest()
