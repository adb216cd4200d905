"""``FakeGlobus``: a stateful FAKE of Globus for tests (not the Globus service).

One loopback ``ThreadingHTTPServer`` (TLS by default, with a throw-away CA) serves a fake Globus Auth
under ``/auth/``, a fake Transfer API under ``/transfer/`` and each fake collection's HTTPS server
under ``/https/<collection-uuid>/``. ``environ()`` gives the globus-sdk environment variables that
point globus-sdk at it. Knobs let tests provoke delays, stalls, corruption, lost responses and
expired tokens.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from pilot_globus.testing._auth import USER_ID, USER_NAME, AuthService
from pilot_globus.testing._certs import make_signing_key, make_tls_files
from pilot_globus.testing._common import ApiError, Reply, Request, injected_error, json_reply
from pilot_globus.testing._https import HttpsService
from pilot_globus.testing._tasks import Collection, TaskRunner
from pilot_globus.testing._transfer import TransferService

SERVICES = ("auth", "transfer", "https")


@dataclass
class _FailRule:
    service: str
    method: str
    path_contains: str
    status: int
    count: int
    after_processing: bool


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, fake: FakeGlobus, context: ssl.SSLContext | None) -> None:
        self.fake = fake
        self.context = context
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # skip HTTPServer's (possibly slow) getfqdn
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.context is None:
            super().finish_request(request, client_address)
            return
        try:
            wrapped = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(wrapped, client_address)
        finally:
            try:
                wrapped.close()
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60
    server: _Server

    def setup(self) -> None:
        """Disable Nagle: headers and body go out in separate writes."""
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                line = self.rfile.readline(65537).split(b";", 1)[0].strip()
                size = int(line or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        body = self._read_body()
        reply = self.server.fake._dispatch(self.command, self.path, dict(self.headers.items()), body)
        self.send_response(reply.status)
        length = reply.length if reply.file is not None else len(reply.body)
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD" or reply.status in (204, 304):
            return
        if reply.file is None:
            self.wfile.write(reply.body)
            return
        with reply.file.open("rb") as fh:
            fh.seek(reply.start)
            left = reply.length
            while left > 0:
                chunk = fh.read(min(left, 1 << 16))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = do_PATCH = _handle


class FakeGlobus:
    """A FAKE of Globus Auth, the Transfer API and collection HTTPS servers, for tests only.

    Use as a context manager; it starts a loopback server on a free port and stops it on exit.
    """

    def __init__(self, workdir: Path, *, tls: bool = True) -> None:
        self.workdir = Path(workdir)
        self.tls = tls
        self.task_delay: float = 0.0
        self.token_lifetime: int = 7200
        self.calls: list[tuple[str, str, str]] = []
        self.server_errors: list[str] = []
        self.user_id: str = USER_ID
        self.username: str = USER_NAME
        self._lock = threading.RLock()
        self._collections: dict[str, Collection] = {}
        self._rules: list[_FailRule] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ca_file: Path | None = None
        self._auth: AuthService | None = None
        self._transfer: TransferService | None = None
        self._https: HttpsService | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> FakeGlobus:
        """Generate key material and start serving (called by ``__enter__``)."""
        if self._server is not None:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        context = None
        if self.tls:
            files = make_tls_files(self.workdir)
            self._ca_file = files.ca_file
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(files.cert_file, files.key_file)
        self._server = _Server(self, context)
        self._auth = AuthService(self._lock, self.url + "/auth", self._collections, lambda: self.token_lifetime,
                                 make_signing_key())
        runner = TaskRunner(self._lock, self._collections, lambda: self.task_delay, self._stopping)
        self._transfer = TransferService(self._lock, self._collections, self._auth, runner, self.https_server)
        self._https = HttpsService(self._lock, self._collections, self._auth)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-globus-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; running tasks stop at their next check."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FakeGlobus:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- addresses --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL of the fake, e.g. ``https://127.0.0.1:PORT``."""
        if self._server is None:
            raise RuntimeError("FakeGlobus is not started")
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._server.server_port}"

    @property
    def ca_file(self) -> Path:
        """The throw-away CA (PEM) that signed the server certificate."""
        if self._ca_file is None:
            raise RuntimeError("FakeGlobus has no CA (not started, or tls=False)")
        return self._ca_file

    def environ(self) -> dict[str, str]:
        """Environment variables pointing globus-sdk at the fake."""
        env = {"GLOBUS_SDK_SERVICE_URL_AUTH": f"{self.url}/auth/",
               "GLOBUS_SDK_SERVICE_URL_TRANSFER": f"{self.url}/transfer/"}
        if self.tls:
            env["GLOBUS_SDK_VERIFY_SSL"] = str(self.ca_file)
        return env

    def https_server(self, collection_id: str) -> str:
        """The ``https_server`` of a collection."""
        return f"{self.url}/https/{collection_id}"

    # -- setup ------------------------------------------------------------------------------------
    def add_collection(self, root: Path, *, display_name: str = "a", require_consent: bool = False) -> str:
        """Serve local directory ``root`` as a new collection; return its UUID."""
        collection_id = str(uuid.uuid4())
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._collections[collection_id] = Collection(collection_id, root, display_name, require_consent)
        return collection_id

    def collection_root(self, collection_id: str) -> Path:
        """The local directory of a collection."""
        return self._coll(collection_id).root

    def register_native_client(self) -> str:
        """Register a native app (PKCE, no secret); return its client id."""
        return self._services()[0].register(None)

    def register_confidential_client(self) -> tuple[str, str]:
        """Register a confidential client; return ``(client_id, client_secret)``."""
        secret = uuid.uuid4().hex + uuid.uuid4().hex
        return self._services()[0].register(secret), secret

    # -- knobs ------------------------------------------------------------------------------------
    def stall(self, collection_id: str) -> None:
        """Tasks touching the collection stay ACTIVE (CONNECTION_FAILED) until unstalled or canceled."""
        with self._lock:
            self._coll(collection_id).stalled = True

    def unstall(self, collection_id: str) -> None:
        """Undo ``stall``."""
        with self._lock:
            self._coll(collection_id).stalled = False

    def corrupt(self, collection_id: str) -> None:
        """Data written into the collection (tasks and HTTPS PUT) gets one byte flipped."""
        with self._lock:
            self._coll(collection_id).corrupt = True

    def uncorrupt(self, collection_id: str) -> None:
        """Undo ``corrupt``."""
        with self._lock:
            self._coll(collection_id).corrupt = False

    def fail_next(self, service: str, method: str, path_contains: str, status: int = 503, count: int = 1, *,
                  after_processing: bool = False) -> None:
        """The next ``count`` matching requests answer ``status`` (after processing them, if asked).

        ``method`` is an HTTP method or ``"*"``; ``path_contains`` is matched against the path within
        the service (as in ``calls``), e.g. ``"/v0.10/transfer"`` or ``"/ls"``.
        """
        if service not in SERVICES:
            raise ValueError(f"service must be one of {SERVICES}")
        with self._lock:
            self._rules.append(_FailRule(service, method.upper(), path_contains, status, count, after_processing))

    def expire_access_tokens(self) -> None:
        """Expire every access token issued so far (refresh tokens keep working)."""
        self._services()[0].expire_all()

    def issued_secrets(self) -> set[str]:
        """Every access token, refresh token and client secret the fake knows (for leak checks)."""
        auth = self._services()[0]
        with self._lock:
            return ({*auth.access_tokens, *(g.refresh_token for g in auth.access_tokens.values() if g.refresh_token),
                     *(s for s in auth.clients.values() if s)})

    def transfer_calls(self) -> list[tuple[str, str, str]]:
        """The Transfer API entries of ``calls``."""
        with self._lock:
            return [c for c in self.calls if c[0] == "transfer"]

    def reset_calls(self) -> None:
        """Forget the recorded calls."""
        with self._lock:
            self.calls.clear()

    @property
    def tasks(self) -> dict[str, dict[str, Any]]:
        """Snapshot of the task documents, by task id."""
        transfer = self._services()[1]
        with self._lock:
            return {tid: dict(task.doc) for tid, task in transfer.tasks.items()}

    def task_events(self, task_id: str) -> list[dict[str, Any]]:
        """Snapshot of a task's events, oldest first."""
        transfer = self._services()[1]
        with self._lock:
            return [dict(e) for e in transfer.tasks[task_id].events]

    @property
    def consents(self) -> dict[str, list[dict[str, Any]]]:
        """Snapshot of the recorded consents, by identity id."""
        auth = self._services()[0]
        with self._lock:
            return {ident: [dict(c) for c in items] for ident, items in auth.consents.items()}

    def wait_task(self, task_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until a task is no longer ACTIVE; return its document (TimeoutError otherwise)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            doc = self.tasks[task_id]
            if doc["status"] != "ACTIVE":
                return doc
            time.sleep(0.02)
        raise TimeoutError(f"task {task_id} still ACTIVE after {timeout}s")

    # -- internals --------------------------------------------------------------------------------
    def _coll(self, collection_id: str) -> Collection:
        with self._lock:
            try:
                return self._collections[collection_id]
            except KeyError:
                raise KeyError(f"unknown collection {collection_id}") from None

    def _services(self) -> tuple[AuthService, TransferService, HttpsService]:
        if self._auth is None or self._transfer is None or self._https is None:
            raise RuntimeError("FakeGlobus is not started")
        return self._auth, self._transfer, self._https

    def _take_rule(self, service: str, method: str, path: str) -> _FailRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.service == service and rule.method in ("*", method) and rule.path_contains in path:
                    rule.count -= 1
                    if rule.count <= 0:
                        self._rules.remove(rule)
                    return rule
        return None

    def _dispatch(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Reply:
        split = urllib.parse.urlsplit(raw_path)
        query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        service = next((s for s in SERVICES if split.path == f"/{s}" or split.path.startswith(f"/{s}/")), None)
        if service is None:
            return json_reply(404, {"code": "NotFound", "message": f"FakeGlobus serves nothing at {split.path}"})
        sub = split.path[len(service) + 1:] or "/"
        if service == "https":
            sub = urllib.parse.unquote(sub)
        with self._lock:
            self.calls.append((service, method, sub))
        auth, transfer, https = self._services()
        handler = {"auth": auth.handle, "transfer": transfer.handle, "https": https.handle}[service]
        rule = self._take_rule(service, method, sub)
        if rule is not None and not rule.after_processing:
            err = injected_error(service, rule.status, sub)
            return json_reply(err.status, err.body)
        try:
            reply = handler(Request(method, sub, query, _CIDict(headers), body))
        except ApiError as exc:
            reply = json_reply(exc.status, exc.body, exc.headers)
        except Exception:  # a bug in the fake: answer 500 and keep the traceback for the test to see
            text = traceback.format_exc()
            self.server_errors.append(text)
            print(text, file=sys.stderr)
            err = injected_error(service, 500, sub)
            reply = json_reply(500, err.body)
        if rule is not None:
            err = injected_error(service, rule.status, sub)
            return json_reply(err.status, err.body)
        return reply


class _CIDict(dict[str, str]):
    """Header mapping with case-insensitive ``get``."""

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__({k.lower(): v for k, v in headers.items()})

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


__all__ = ["FakeGlobus"]
