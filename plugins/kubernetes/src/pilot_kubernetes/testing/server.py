"""HTTP front of the EMULATED Kubernetes API server (an emulation for tests, not Kubernetes).

Speaks what the official ``kubernetes`` client sends, on loopback: ``/version``, namespaces,
``/apis/batch/v1/.../jobs[/name[/status]]``, ``/api/v1/.../pods[/name[/status|/log]]``,
``/api/v1/.../secrets[/name]``, namespaced or cluster-wide lists, label and field selectors,
``?watch=true&resourceVersion=..&timeoutSeconds=..&allowWatchBookmarks=..`` as chunked JSON
lines, PUT/PATCH (merge and JSON patches), and DELETE with ``DeleteOptions``
(``propagationPolicy``, ``gracePeriodSeconds``). Requests need the kubeconfig's bearer token;
every request is counted (:attr:`EmulatedApiServer.requests`).
"""

from __future__ import annotations

import json
import select
import socket
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .objects import RESOURCES, ApiError, Obj
from .state import NAMESPACES, ClusterState

DEFAULT_WATCH_SECONDS = 1800.0
JOB_ORPHAN_WARNING = (
    '299 - "child pods are preserved by default when jobs are deleted; set propagationPolicy=Background '
    'to remove them or set propagationPolicy=Orphan to suppress this warning"'
)
VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-emulated",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "goVersion": "none (emulated)",
    "platform": "linux/amd64",
    "buildDate": "2026-01-01T00:00:00Z",
    "compiler": "emulated (pilot_kubernetes.testing, not Kubernetes)",
}


class EmulatedApiServer(ThreadingHTTPServer):
    """A threading HTTP server holding the emulated cluster's state (not Kubernetes)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # many clients connecting at once must not wait for SYN retries

    def __init__(self, state: ClusterState, token: str, logs: Callable[[str, str], Path | None]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state
        self.token = token
        self.logs = logs
        self.requests = 0
        self.scheme = "http"  # "https" once EmulatedCluster(tls=True) wrapped the socket
        self._count_lock = threading.Lock()

    def count(self) -> None:
        """Count one API request."""
        with self._count_lock:
            self.requests += 1

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (``https`` with TLS)."""
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stalls
    server: EmulatedApiServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read state, not access logs."""

    # --- plumbing ----------------------------------------------------------------------------

    def _send(self, code: int, body: Obj | str, headers: dict[str, str] | None = None) -> None:
        text = body if isinstance(body, str) else json.dumps(body)
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, "BadRequest", "the request body is not valid JSON") from None

    def _body(self) -> Obj:
        body = self._json()
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the request body must be a JSON object")
        return body

    def _dispatch(self, method: str) -> None:
        self.server.count()
        try:
            scheme, _, credential = (self.headers.get("Authorization") or "").partition(" ")
            if scheme.lower() != "bearer" or credential != self.server.token:  # RFC 7235: any case
                raise ApiError(401, "Unauthorized", "Unauthorized")
            self._route(method)
        except ApiError as error:
            self._send(error.code, error.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # --- routing -----------------------------------------------------------------------------

    def _route(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = {key: values[-1] for key, values in urllib.parse.parse_qs(url.query).items()}
        parts = [urllib.parse.unquote(part) for part in url.path.strip("/").split("/") if part]
        if parts == ["version"] and method == "GET":
            self._send(200, VERSION)
            return
        if parts[:2] == ["api", "v1"]:
            group, rest = "", parts[2:]
        elif parts[:3] == ["apis", "batch", "v1"]:
            group, rest = "batch", parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if group == "" and rest[:1] == ["namespaces"] and len(rest) <= 2:
            self._namespaces(method, rest[1] if len(rest) == 2 else None)
            return
        namespace: str | None = None
        if rest[:1] == ["namespaces"]:
            namespace, rest = rest[1], rest[2:]
        if not rest or rest[0] not in RESOURCES or RESOURCES[rest[0]][0] != group or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resource, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else None)
        if sub not in (None, "status") and not (sub == "log" and resource == "pods"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if name is None:
            self._collection(method, resource, namespace, query)
        elif namespace is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        elif sub == "log":
            self._log(method, namespace, name)
        else:
            self._object(method, resource, namespace, name, sub=sub, query=query)

    def _namespaces(self, method: str, name: str | None) -> None:
        if method != "GET":
            raise ApiError(405, "MethodNotAllowed", "namespaces are fixed in the emulated cluster")

        def namespace(ns: str) -> Obj:
            return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}, "status": {"phase": "Active"}}

        if name is None:
            self._send(
                200,
                {
                    "apiVersion": "v1",
                    "kind": "NamespaceList",
                    "metadata": {},
                    "items": [namespace(ns) for ns in NAMESPACES],
                },
            )
        elif name in NAMESPACES:
            self._send(200, namespace(name))
        else:
            raise ApiError(404, "NotFound", f'namespaces "{name}" not found', {"name": name, "kind": "namespaces"})

    def _collection(self, method: str, resource: str, namespace: str | None, query: dict[str, str]) -> None:
        state = self.server.state
        labels, fields = query.get("labelSelector"), query.get("fieldSelector")
        if method == "GET" and query.get("watch") in ("true", "1"):
            timeout = float(query.get("timeoutSeconds") or DEFAULT_WATCH_SECONDS)
            self._watch(
                resource,
                namespace,
                labels=labels,
                fields=fields,
                version=query.get("resourceVersion"),
                timeout=timeout,
                bookmarks=query.get("allowWatchBookmarks") in ("true", "1"),
            )
        elif method == "GET":
            items, version = state.list_objects(resource, namespace, labels, fields)
            group, kind = RESOURCES[resource]
            self._send(
                200,
                {
                    "apiVersion": f"{group}/v1" if group else "v1",
                    "kind": f"{kind}List",
                    "metadata": {"resourceVersion": version},
                    "items": items,
                },
            )
        elif method == "POST" and namespace is not None:
            body = self._body()
            sent_ns = body.get("metadata", {}).get("namespace")
            if sent_ns and sent_ns != namespace:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            self._send(201, state.create(resource, namespace, body))
        else:
            raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on {resource}")

    def _object(
        self, method: str, resource: str, namespace: str, name: str, *, sub: str | None, query: dict[str, str]
    ) -> None:
        state = self.server.state
        if method == "GET":
            self._send(200, state.get(resource, namespace, name))
        elif method == "PUT":
            self._send(200, state.replace(resource, namespace, name, self._body(), sub))
        elif method == "PATCH":
            body = self._json()
            if "json-patch" in (self.headers.get("Content-Type") or "") or isinstance(body, list):
                if not isinstance(body, list):
                    raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
                self._send(200, state.json_patch(resource, namespace, name, body, sub))
            else:
                self._send(200, state.patch(resource, namespace, name, body, sub))
        elif method == "DELETE" and sub is None:
            self._delete(resource, namespace, name, query)
        else:
            raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on {resource}")

    def _delete(self, resource: str, namespace: str, name: str, query: dict[str, str]) -> None:
        options = self._body()
        policy = options.get("propagationPolicy") or query.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        grace_value = options.get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
        grace = None if grace_value is None else int(grace_value)
        state = self.server.state
        obj = state.delete(resource, namespace, name, policy, grace)
        headers = {"Warning": JOB_ORPHAN_WARNING} if resource == "jobs" and policy is None else None
        try:
            self._send(200, state.get(resource, namespace, name), headers)
        except ApiError:
            if resource == "pods":
                self._send(200, obj, headers)
                return
            group = RESOURCES[resource][0]
            details = {"name": name, "group": group, "kind": resource, "uid": obj["metadata"]["uid"]}
            self._send(
                200,
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details},
                headers,
            )

    def _log(self, method: str, namespace: str, name: str) -> None:
        if method != "GET":
            raise ApiError(405, "MethodNotAllowed", "pod logs are read-only")
        pod = self.server.state.get("pods", namespace, name)
        path = self.server.logs(namespace, name)
        if path is None or not path.exists():
            container = pod["spec"]["containers"][0]["name"]
            raise ApiError(
                400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating'
            )
        self._send(200, path.read_text(errors="replace"))

    # --- watch -------------------------------------------------------------------------------

    def _client_gone(self) -> bool:
        sock = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _watch(
        self,
        resource: str,
        namespace: str | None,
        *,
        labels: str | None,
        fields: str | None,
        version: str | None,
        timeout: float,
        bookmarks: bool,
    ) -> None:
        events = self.server.state.watch(
            resource,
            namespace,
            labels=labels,
            fields=fields,
            resource_version=version,
            timeout=timeout,
            alive=lambda: not self._client_gone(),
            bookmarks=bookmarks,
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        try:
            self.wfile.flush()
            for event in events:
                data = (json.dumps(event) + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
