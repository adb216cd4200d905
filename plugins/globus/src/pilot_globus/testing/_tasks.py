"""Collections and task execution of the FAKE Globus used by tests (not the Globus service).

A collection is a local directory. Transfer and delete tasks really move/remove files, each in a
daemon thread, honouring the fake's knobs (task delay, stalled and corrupting collections).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pilot_globus.testing._common import transfer_time, utcnow

SYNC_LEVELS = {"exists": 0, "size": 1, "mtime": 2, "checksum": 3}


@dataclass
class Collection:
    """A fake collection: a local directory plus knobs."""

    id: str
    root: Path
    display_name: str
    require_consent: bool = False
    stalled: bool = False
    corrupt: bool = False

    def resolve(self, path: str) -> Path:
        """The local path of collection path ``path``; ValueError when it would escape the root."""
        rel = path.strip()
        if rel.startswith("~"):
            rel = rel[1:]
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ValueError(f"path {path!r} escapes the collection root")
        local = self.root.joinpath(*parts)
        real_root = self.root.resolve()
        if local.resolve() != real_root and real_root not in local.resolve().parents:
            raise ValueError(f"path {path!r} escapes the collection root")
        return local


def flip_byte(path: Path) -> None:
    """Corrupt a file in place: flip the bits of its middle byte (append one byte to an empty file)."""
    size = path.stat().st_size
    with path.open("r+b") as fh:
        if size == 0:
            fh.write(b"\xff")
            return
        fh.seek(size // 2)
        byte = fh.read(1)
        fh.seek(size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))


def md5_of(path: Path) -> str:
    """Hex MD5 of a file."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class TaskFailed(Exception):
    """A fatal task error: ``code``/``description`` for ``fatal_error``, ``details`` for the event."""

    def __init__(self, code: str, description: str, details: str = "") -> None:
        super().__init__(f"{code}: {description}")
        self.code, self.description, self.details = code, description, details


@dataclass
class Task:
    """A fake task: its document, events and inputs."""

    doc: dict[str, Any]
    items: list[dict[str, Any]]
    options: dict[str, Any]
    collections: tuple[str, ...]
    events: list[dict[str, Any]] = field(default_factory=list)
    canceled: threading.Event = field(default_factory=threading.Event)
    deadline: datetime.datetime | None = None


class TaskRunner:
    """Runs fake tasks in daemon threads."""

    def __init__(
        self,
        lock: threading.RLock,
        collections: Mapping[str, Collection],
        delay: Callable[[], float],
        stopping: threading.Event,
    ) -> None:
        self._lock = lock
        self._collections = collections
        self._delay = delay
        self._stopping = stopping

    def start(self, task: Task) -> None:
        """Start the task's thread."""
        thread = threading.Thread(target=self._run, args=(task,), name=f"fake-globus-task-{task.doc['task_id']}")
        thread.daemon = True
        thread.start()

    def cancel(self, task: Task) -> bool:
        """Cancel an ACTIVE task (FAILED/CANCELED); False when it had already completed."""
        with self._lock:
            if task.doc["status"] != "ACTIVE":
                return False
            task.canceled.set()
            self._event(task, "CANCELED", "canceled", "The task was canceled by the user", is_error=True)
            self._finish(task, "FAILED", {"code": "CANCELED", "description": "canceled"})
            return True

    # -- bookkeeping ------------------------------------------------------------------------
    def _event(self, task: Task, code: str, description: str, details: str, *, is_error: bool) -> None:
        with self._lock:
            task.events.append({"DATA_TYPE": "event", "code": code, "description": description,
                                "details": details, "is_error": is_error, "time": transfer_time()})

    def _set(self, task: Task, **changes: Any) -> None:
        with self._lock:
            if task.doc["status"] == "ACTIVE":
                task.doc.update(changes)

    def _add(self, task: Task, **deltas: int) -> None:
        with self._lock:
            for key, value in deltas.items():
                task.doc[key] += value

    def _finish(self, task: Task, status: str, fatal: dict[str, str] | None) -> None:
        with self._lock:
            if task.doc["status"] != "ACTIVE":
                return
            task.doc.update(
                status=status, fatal_error=fatal, completion_time=transfer_time(), is_ok=None,
                nice_status=None if fatal is None else fatal["code"],
                subtasks_pending=0, subtasks_succeeded=0 if fatal else task.doc["subtasks_total"],
                subtasks_failed=1 if fatal else 0,
            )

    def _halted(self, task: Task) -> bool:
        return task.canceled.is_set() or self._stopping.is_set()

    def _check(self, task: Task) -> bool:
        """Wait while any collection of the task is stalled; True when the task must stop."""
        reported = False
        while True:
            if self._halted(task):
                return True
            if task.deadline is not None and utcnow() > task.deadline:
                raise TaskFailed("DEADLINE_EXPIRED", "deadline expired", "The task's deadline passed")
            with self._lock:
                stalled = [c for c in task.collections if self._collections[c].stalled]
            if not stalled:
                if reported:
                    self._set(task, nice_status="OK", is_ok=True)
                return False
            if not reported:
                reported = True
                self._set(task, nice_status="CONNECTION_FAILED", is_ok=False)
                name = self._collections[stalled[0]].display_name
                self._event(task, "CONNECTION_FAILED", "Error connecting to the collection",
                            f"Connection to {name} ({stalled[0]}) failed; retrying (FakeGlobus stall)", is_error=True)
            task.canceled.wait(0.05)

    # -- work ---------------------------------------------------------------------------------
    def _run(self, task: Task) -> None:
        try:
            if task.canceled.wait(self._delay()) or self._halted(task):
                return
            self._set(task, nice_status="OK", is_ok=True)
            self._event(task, "STARTED", "started", "Task started processing", is_error=False)
            if self._check(task):
                return
            if task.doc["type"] == "TRANSFER":
                self._transfer(task)
            else:
                self._delete(task)
            if self._halted(task):
                return
            self._event(task, "SUCCEEDED", "succeeded", "Task completed", is_error=False)
            self._finish(task, "SUCCEEDED", None)
        except TaskFailed as exc:
            self._fail(task, exc)
        except (OSError, ValueError) as exc:
            self._fail(task, TaskFailed("ENDPOINT_ERROR", "endpoint error", str(exc)))

    def _fail(self, task: Task, exc: TaskFailed) -> None:
        self._event(task, exc.code, exc.description, exc.details, is_error=True)
        self._finish(task, "FAILED", {"code": exc.code, "description": exc.description})

    def _local(self, coll: Collection, path: str) -> Path:
        try:
            return coll.resolve(path)
        except ValueError as exc:
            raise TaskFailed("PERMISSION_DENIED", "permission denied", str(exc)) from None

    def _transfer(self, task: Task) -> None:
        src_coll = self._collections[task.doc["source_endpoint_id"]]
        dst_coll = self._collections[task.doc["destination_endpoint_id"]]
        for item in task.items:
            src = self._local(src_coll, item["source_path"])
            dst = self._local(dst_coll, item["destination_path"])
            if not src.exists():
                raise TaskFailed("FILE_NOT_FOUND", "file not found",
                                 f"{item['source_path']} not found on {src_coll.display_name} ({src_coll.id})")
            if src.is_dir():
                if item.get("recursive") is False:
                    raise TaskFailed("NOT_A_FILE", "not a file", f"{item['source_path']} is a directory")
                self._copy_tree(task, src, dst, dst_coll)
            else:
                if self._check(task):
                    return
                self._copy_file(task, src, dst, dst_coll)

    def _copy_tree(self, task: Task, src: Path, dst: Path, dst_coll: Collection) -> None:
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            here = dst / Path(dirpath).relative_to(src)
            here.mkdir(parents=True, exist_ok=True)
            self._add(task, directories=1)
            for name in sorted(filenames):
                if self._check(task):
                    return
                self._copy_file(task, Path(dirpath) / name, here / name, dst_coll)

    @staticmethod
    def _skip(src: Path, dst: Path, level: int | None) -> bool:
        if level is None or not dst.is_file():
            return False
        if level == 0:
            return True
        if src.stat().st_size != dst.stat().st_size:
            return False
        if level == 1:
            return True
        if level == 2:
            return int(dst.stat().st_mtime) >= int(src.stat().st_mtime)
        return md5_of(src) == md5_of(dst)

    def _copy_file(self, task: Task, src: Path, dst: Path, dst_coll: Collection) -> None:
        size = src.stat().st_size
        self._add(task, files=1)
        if self._skip(src, dst, task.options.get("sync_level")):
            self._add(task, files_skipped=1)
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.parent / f".{dst.name}.fakeglobus-{secrets.token_hex(4)}.part"
        try:
            shutil.copyfile(src, tmp)
            with self._lock:
                corrupt = dst_coll.corrupt
            if corrupt:
                flip_byte(tmp)
            if task.options.get("verify_checksum"):
                expected, got = md5_of(src), md5_of(tmp)
                self._add(task, bytes_checksummed=size)
                if expected != got:
                    self._set(task, nice_status="VERIFY_CHECKSUM", is_ok=False)
                    raise TaskFailed("VERIFY_CHECKSUM", "checksum verification failed",
                                     f"MD5 checksum mismatch for {dst.name}: expected {expected} got {got}")
            if task.options.get("preserve_timestamp"):
                shutil.copystat(src, tmp)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
        self._add(task, files_transferred=1, bytes_transferred=size)

    def _delete(self, task: Task) -> None:
        coll = self._collections[task.doc["source_endpoint_id"]]
        for item in task.items:
            if self._check(task):
                return
            target = self._local(coll, item["path"])
            if target.resolve() == coll.root.resolve():
                raise TaskFailed("PERMISSION_DENIED", "permission denied", "refusing to delete the collection root")
            if not target.exists() and not target.is_symlink():
                if task.options.get("ignore_missing"):
                    continue
                raise TaskFailed("FILE_NOT_FOUND", "file not found", f"{item['path']} not found on {coll.display_name}")
            if target.is_dir() and not target.is_symlink():
                if not task.options.get("recursive"):
                    if any(target.iterdir()):
                        raise TaskFailed("DIRECTORY_NOT_EMPTY", "directory not empty",
                                         f"{item['path']} is a non-empty directory and recursive is false")
                    target.rmdir()
                    self._add(task, directories=1)
                    continue
                files = sum(len(f) for _, _, f in os.walk(target))
                dirs = sum(1 for _ in os.walk(target))
                shutil.rmtree(target)
                self._add(task, files=files, directories=dirs)
            else:
                target.unlink()
                self._add(task, files=1)
