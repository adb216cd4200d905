"""FAKE Globus Transfer API (``/v0.10/...``) for tests (not the Globus service).

Collection documents, filesystem operations (ls, stat, mkdir, rename), submission ids, transfer and
delete submissions (tasks run by ``_tasks.TaskRunner``), task documents, event lists and cancel;
response documents and error codes mirror globus-sdk's testing data.
"""

from __future__ import annotations

import datetime
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pilot_globus.testing._auth import USER_NAME, AccessToken, AuthService
from pilot_globus.testing._common import (
    TRANSFER_RS,
    TRANSFER_SCOPE,
    Reply,
    Request,
    data_access_scope,
    json_reply,
    request_id,
    transfer_error,
    transfer_time,
    utcnow,
)
from pilot_globus.testing._tasks import SYNC_LEVELS, Collection, Task, TaskRunner


def file_doc(path: Path) -> dict[str, Any]:
    """A Transfer ``file`` document for a local path."""
    st = path.stat()
    return {
        "DATA_TYPE": "file", "name": path.name, "type": "dir" if path.is_dir() else "file",
        "size": st.st_size, "last_modified": transfer_time(st.st_mtime), "permissions": f"{st.st_mode & 0o7777:04o}",
        "user": "fakeuser", "group": "fakegroup", "link_target": None, "link_group": None,
        "link_last_modified": None, "link_size": None, "link_user": None,
    }


def _int(value: str | None, default: int, name: str, resource: str) -> int:
    if value is None or value == "":
        return default
    try:
        out = int(value)
    except ValueError:
        raise transfer_error(400, "ClientError.BadRequest", f"Invalid {name} {value!r}", resource) from None
    if out < 0:
        raise transfer_error(400, "ClientError.BadRequest", f"Invalid {name} {value!r}", resource)
    return out


class TransferService:
    """State and request handling of the fake Transfer API."""

    def __init__(
        self,
        lock: threading.RLock,
        collections: Mapping[str, Collection],
        auth: AuthService,
        runner: TaskRunner,
        https_server: Callable[[str], str],
    ) -> None:
        self._lock = lock
        self._collections = collections
        self._auth = auth
        self._runner = runner
        self._https_server = https_server
        self.tasks: dict[str, Task] = {}
        self._submission_ids: set[str] = set()
        self._submitted: dict[str, str] = {}

    # -- dispatch ---------------------------------------------------------------------------------
    def handle(self, req: Request) -> Reply:
        """Answer one request to ``/transfer/<path>``."""
        res = req.path
        token = self._authenticate(req)
        parts = [p for p in res.split("/") if p]
        if not parts or parts[0] != "v0.10":
            raise transfer_error(404, "ClientError.NotFound", f"Unknown resource {res}", res)
        parts = parts[1:]
        route = (req.method, *parts)
        if route[:2] == ("GET", "endpoint") and len(parts) == 2:
            return json_reply(200, self._endpoint_doc(self._collection(parts[1], res)))
        if len(parts) == 4 and parts[:2] == ["operation", "endpoint"]:
            coll = self._collection(parts[2], res)
            self._consent(token, coll, res)
            handler = {("GET", "ls"): self._ls, ("GET", "stat"): self._stat,
                       ("POST", "mkdir"): self._mkdir, ("POST", "rename"): self._rename}.get((req.method, parts[3]))
            if handler is not None:
                return handler(req, coll)
        if route == ("GET", "submission_id"):
            value = str(uuid.uuid4())
            with self._lock:
                self._submission_ids.add(value)
            return json_reply(200, {"DATA_TYPE": "submission_id", "value": value})
        if route in (("POST", "transfer"), ("POST", "delete")):
            return self._submit(req, token, parts[0])
        if route == ("GET", "task_list"):
            return self._task_list(req, token)
        if len(parts) >= 2 and parts[0] == "task":
            task = self._task(parts[1], res)
            if req.method == "GET" and len(parts) == 2:
                with self._lock:
                    return json_reply(200, dict(task.doc))
            if req.method == "GET" and parts[2:] == ["event_list"]:
                return self._event_list(req, task)
            if req.method == "POST" and parts[2:] == ["cancel"]:
                if self._runner.cancel(task):
                    return json_reply(200, {"DATA_TYPE": "result", "code": "Canceled", "resource": res,
                                            "message": "The task has been cancelled successfully.",
                                            "request_id": request_id()})
                return json_reply(200, {"DATA_TYPE": "result", "code": "TaskComplete", "resource": res,
                                        "message": "The task completed before the cancel request was processed.",
                                        "request_id": request_id()})
        raise transfer_error(404, "ClientError.NotFound", f"Unknown resource {res}", res)

    # -- checks ---------------------------------------------------------------------------------
    def _authenticate(self, req: Request) -> AccessToken:
        bearer = req.bearer()
        record = self._auth.lookup(bearer)
        if bearer is None:
            raise transfer_error(401, "AuthenticationFailed", "No Authorization header was provided", req.path)
        if record is None or record.expired or record.resource_server != TRANSFER_RS:
            raise transfer_error(401, "AuthenticationFailed", "Token is not active", req.path)
        return record

    def _collection(self, collection_id: str, res: str) -> Collection:
        with self._lock:
            coll = self._collections.get(collection_id.lower())
        if coll is None:
            raise transfer_error(404, "EndpointNotFound", f"No such endpoint or collection '{collection_id}'", res)
        return coll

    def _consent(self, token: AccessToken, coll: Collection, res: str) -> None:
        if not coll.require_consent or coll.id in token.data_access:
            return
        scope = f"{TRANSFER_SCOPE}[*{data_access_scope(coll.id)}]"
        raise transfer_error(
            403, "ConsentRequired", "Missing required data_access consent", res, required_scopes=[scope],
            authorization_parameters={
                "session_message": f"The collection '{coll.display_name}' requires data_access consent.",
                "required_scopes": [scope],
            },
        )

    def _path(self, coll: Collection, path: str, res: str) -> Path:
        try:
            return coll.resolve(path)
        except ValueError as exc:
            raise transfer_error(403, "EndpointPermissionDenied", f"Denied by endpoint: {exc}", res) from None

    def _task(self, task_id: str, res: str) -> Task:
        with self._lock:
            task = self.tasks.get(task_id)
        if task is None:
            raise transfer_error(404, "TaskNotFound", f"Task {task_id} not found", res)
        return task

    # -- documents --------------------------------------------------------------------------------
    def _endpoint_doc(self, coll: Collection) -> dict[str, Any]:
        return {
            "DATA_TYPE": "endpoint", "id": coll.id, "display_name": coll.display_name, "name": coll.display_name,
            "canonical_name": f"{USER_NAME}#{coll.id}", "entity_type": "GCSv5_mapped_collection",
            "gcs_version": "5.4.80", "https_server": self._https_server(coll.id), "high_assurance": False,
            "authentication_assurance_timeout": None, "non_functional": False, "organization": "FakeGlobus",
            "description": "A FakeGlobus test collection (not a real Globus collection)",
            "owner_id": str(uuid.uuid5(uuid.NAMESPACE_URL, "fakeglobus-owner")), "owner_string": USER_NAME,
            "public": False, "is_globus_connect": False, "host_endpoint_id": None, "host_path": None,
            "default_directory": "/", "force_encryption": False, "disable_verify": False, "force_verify": False,
            "mfa_required": False, "acl_available": False, "acl_editable": False, "activated": True,
            "expires_in": -1, "gcs_manager_url": None, "network_use": "normal", "in_use": False,
            "DATA": [],
        }

    def _ls(self, req: Request, coll: Collection) -> Reply:
        res, path = req.path, req.query.get("path", "/")
        local = self._path(coll, path, res)
        if not local.exists():
            raise transfer_error(404, "ClientError.NotFound", f"Directory '{path}' not found", res)
        if not local.is_dir():
            raise transfer_error(400, "ExternalError.DirListingFailed.NotDirectory",
                                 f"Directory Listing Failed: '{path}' is not a directory", res)
        show_hidden = req.query.get("show_hidden", "true").lower() not in ("false", "0", "f")
        names = sorted(n for n in os.listdir(local) if show_hidden or not n.startswith("."))
        limit = _int(req.query.get("limit"), 100000, "limit", res)
        offset = _int(req.query.get("offset"), 0, "offset", res)
        docs = [file_doc(local / n) for n in names[offset:offset + limit] if (local / n).exists()]
        rel = local.relative_to(coll.root).as_posix()
        abspath = "/" if rel == "." else f"/{rel}/"
        return json_reply(200, {
            "DATA_TYPE": "file_list", "DATA": docs, "path": abspath, "absolute_path": abspath, "endpoint": coll.id,
            "length": len(docs), "total": len(names), "limit": limit, "offset": offset,
            "rename_supported": True, "symlink_supported": False,
        })

    def _stat(self, req: Request, coll: Collection) -> Reply:
        path = req.query.get("path", "/")
        local = self._path(coll, path, req.path)
        if not local.exists():
            raise transfer_error(404, "NotFound", f"Path not found, '{path}' not found on {coll.display_name}",
                                 req.path)
        return json_reply(200, file_doc(local))

    def _mkdir(self, req: Request, coll: Collection) -> Reply:
        path = str(req.json().get("path", ""))
        local = self._path(coll, path, req.path)
        if local.exists():
            raise transfer_error(502, "ExternalError.MkdirFailed.Exists", f"Path already exists, '{path}'", req.path)
        if not local.parent.is_dir():
            raise transfer_error(404, "ClientError.NotFound", f"Parent of '{path}' not found", req.path)
        local.mkdir()
        return json_reply(202, {"DATA_TYPE": "mkdir_result", "code": "DirectoryCreated", "resource": req.path,
                                "message": "The directory was created successfully", "request_id": request_id()})

    def _rename(self, req: Request, coll: Collection) -> Reply:
        body = req.json()
        old, new = str(body.get("old_path", "")), str(body.get("new_path", ""))
        src, dst = self._path(coll, old, req.path), self._path(coll, new, req.path)
        if not src.exists():
            raise transfer_error(404, "ClientError.NotFound", f"'{old}' not found", req.path)
        if not dst.parent.is_dir():
            raise transfer_error(404, "ClientError.NotFound", f"Parent of '{new}' not found", req.path)
        try:
            os.replace(src, dst)
        except OSError as exc:
            raise transfer_error(502, "ExternalError.RenameFailed", f"Rename failed: {exc}", req.path) from None
        return json_reply(200, {"DATA_TYPE": "result", "code": "FileRenamed", "resource": req.path,
                                "message": "File or directory renamed successfully", "request_id": request_id()})

    # -- submissions ------------------------------------------------------------------------------
    def _submit(self, req: Request, token: AccessToken, kind: str) -> Reply:
        res, body = req.path, req.json()
        sid = str(body.get("submission_id") or "")
        with self._lock:
            if sid not in self._submission_ids:
                raise transfer_error(400, "ClientError.BadRequest", f"Invalid submission_id {sid!r}", res)
            if sid in self._submitted:
                return json_reply(200, self._result("Duplicate", f"A {kind} with id '{sid}' was already submitted",
                                                    res, sid, self._submitted[sid]))
        if body.get("DATA_TYPE") != kind:
            raise transfer_error(400, "ClientError.BadRequest", f"DATA_TYPE must be '{kind}'", res)
        items = body.get("DATA")
        if not isinstance(items, list) or not items:
            raise transfer_error(400, f"ClientError.BadRequest.No{kind.title()}Items",
                                 f"A {kind} requires at least one item", res)
        item_keys = ("source_path", "destination_path") if kind == "transfer" else ("path",)
        ends = (body.get("source_endpoint"), body.get("destination_endpoint")) if kind == "transfer" \
            else (body.get("endpoint"),)
        colls = [self._collection(str(e or ""), res) for e in ends]
        for coll in colls:
            self._consent(token, coll, res)
        for item in items:
            if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in item_keys):
                raise transfer_error(400, "ClientError.BadRequest", f"Each item needs {', '.join(item_keys)}", res)
            for key, coll in zip(item_keys, colls, strict=True):
                self._path(coll, item[key], res)
        options = self._options(body, kind, res)
        deadline = self._deadline(body.get("deadline"), res)
        task_id = str(uuid.uuid4())
        doc = self._task_doc(task_id, kind, token, colls=colls, body=body, options=options, deadline=deadline,
                             n_items=len(items))
        task = Task(doc, items, options, tuple(c.id for c in colls), deadline=deadline)
        with self._lock:
            if sid in self._submitted:
                return json_reply(200, self._result("Duplicate", f"A {kind} with id '{sid}' was already submitted",
                                                    res, sid, self._submitted[sid]))
            self._submitted[sid] = task_id
            self.tasks[task_id] = task
        self._runner.start(task)
        message = f"The {kind} has been accepted and a task has been created and queued for execution"
        return json_reply(202, self._result("Accepted", message, res, sid, task_id))

    @staticmethod
    def _result(code: str, message: str, res: str, sid: str, task_id: str) -> dict[str, Any]:
        return {
            "DATA_TYPE": f"{res.rsplit('/', 1)[-1]}_result", "code": code, "message": message,
            "request_id": request_id(), "resource": res, "submission_id": sid, "task_id": task_id,
            "task_link": {"DATA_TYPE": "link", "href": f"task/{task_id}?format=json", "rel": "related",
                          "resource": "task", "title": "related task"},
        }

    def _options(self, body: dict[str, Any], kind: str, res: str) -> dict[str, Any]:
        if kind == "delete":
            return {"recursive": bool(body.get("recursive")), "ignore_missing": bool(body.get("ignore_missing"))}
        level = body.get("sync_level")
        if isinstance(level, str):
            level = SYNC_LEVELS.get(level, int(level) if level.isdigit() else -1)
        if level is not None and (not isinstance(level, int) or not 0 <= level <= 3):
            raise transfer_error(400, "ClientError.BadRequest", f"Invalid sync_level {body.get('sync_level')!r}", res)
        return {"sync_level": level, "verify_checksum": bool(body.get("verify_checksum")),
                "preserve_timestamp": bool(body.get("preserve_timestamp"))}

    @staticmethod
    def _deadline(value: Any, res: str) -> datetime.datetime | None:
        if value in (None, ""):
            return None
        try:
            when = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise transfer_error(400, "ClientError.BadRequest", f"Invalid deadline {value!r}", res) from None
        return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)

    def _task_doc(
        self, task_id: str, kind: str, token: AccessToken, *, colls: list[Collection], body: dict[str, Any],
        options: dict[str, Any], deadline: datetime.datetime | None, n_items: int,
    ) -> dict[str, Any]:
        now = utcnow()
        dst = colls[-1] if kind == "transfer" else None
        return {
            "DATA_TYPE": "task", "task_id": task_id, "type": kind.upper(), "status": "ACTIVE",
            "nice_status": "Queued", "is_ok": True, "label": body.get("label"), "owner_id": token.identity_id,
            "username": USER_NAME, "request_time": transfer_time(now), "completion_time": None,
            "deadline": transfer_time(deadline or now + datetime.timedelta(days=365)),
            "source_endpoint_id": colls[0].id, "source_endpoint_display_name": colls[0].display_name,
            "destination_endpoint_id": dst.id if dst else None,
            "destination_endpoint_display_name": dst.display_name if dst else None,
            "verify_checksum": options.get("verify_checksum", False), "sync_level": options.get("sync_level"),
            "preserve_timestamp": options.get("preserve_timestamp", False), "encrypt_data": False,
            "delete_destination_extra": False, "recursive_symlinks": "ignore",
            "files": 0, "directories": 0, "files_skipped": 0, "files_transferred": 0, "bytes_transferred": 0,
            "bytes_checksummed": 0, "effective_bytes_per_second": 0, "faults": 0, "fatal_error": None,
            "subtasks_total": n_items, "subtasks_pending": n_items, "subtasks_succeeded": 0, "subtasks_failed": 0,
            "subtasks_canceled": 0, "subtasks_expired": 0, "subtasks_retrying": 0, "subtasks_skipped_errors": 0,
            "is_paused": False, "canceled_by_admin": None, "canceled_by_admin_message": None,
            "history_deleted": False, "skip_source_errors": False, "fail_on_quota_errors": False,
            "filter_rules": None, "source_base_path": None, "destination_base_path": None,
        }

    # -- task queries -----------------------------------------------------------------------------
    def _event_list(self, req: Request, task: Task) -> Reply:
        res = req.path
        wanted: dict[str, str] = {}
        for clause in req.query.get("filter", "").split("/"):
            key, sep, value = clause.partition(":")
            if sep:
                wanted[key.strip()] = value.strip()
        with self._lock:
            events = [dict(e) for e in reversed(task.events)]
        if "is_error" in wanted:
            flag = wanted["is_error"].lower() in ("1", "true", "t")
            events = [e for e in events if e["is_error"] == flag]
        if "code" in wanted:
            events = [e for e in events if e["code"] in wanted["code"].split(",")]
        limit = _int(req.query.get("limit"), 10, "limit", res)
        offset = _int(req.query.get("offset"), 0, "offset", res)
        page = events[offset:offset + limit]
        return json_reply(200, {"DATA_TYPE": "event_list", "DATA": page, "length": len(page), "limit": limit,
                                "offset": offset, "total": len(events)})

    def _task_list(self, req: Request, token: AccessToken) -> Reply:
        res = req.path
        wanted: dict[str, set[str]] = {}
        for clause in req.query.get("filter", "").split("/"):
            key, sep, value = clause.partition(":")
            if sep:
                wanted[key.strip()] = set(value.split(","))
        with self._lock:
            docs = [dict(t.doc) for t in self.tasks.values() if t.doc["owner_id"] == token.identity_id]
        docs = [d for d in docs if all(str(d.get(k)) in v for k, v in wanted.items() if k in ("status", "type",
                                                                                          "label", "task_id"))]
        docs.reverse()
        limit = _int(req.query.get("limit"), 10, "limit", res)
        offset = _int(req.query.get("offset"), 0, "offset", res)
        page = docs[offset:offset + limit]
        return json_reply(200, {"DATA_TYPE": "task_list", "DATA": page, "length": len(page), "limit": limit,
                                "offset": offset, "total": len(docs)})
