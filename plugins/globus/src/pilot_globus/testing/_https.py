"""FAKE Globus collection HTTPS servers for tests (not the Globus service).

``/https/<collection-uuid>/<path>``: GET (with optional ``Range``), HEAD, PUT and DELETE of the
collection's files, authorized by a bearer token for the collection's ``https`` scope.
"""

from __future__ import annotations

import email.utils
import os
import re
import secrets
import threading
from collections.abc import Mapping
from pathlib import Path

from pilot_globus.testing._auth import AuthService
from pilot_globus.testing._common import ApiError, Reply, Request, json_reply
from pilot_globus.testing._tasks import Collection, flip_byte

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _error(status: int, code: str, message: str, **headers: str) -> ApiError:
    return ApiError(status, {"code": code, "message": message, "http_response_code": status}, dict(headers))


class HttpsService:
    """Request handling of the fake collection HTTPS servers."""

    def __init__(self, lock: threading.RLock, collections: Mapping[str, Collection], auth: AuthService) -> None:
        self._lock = lock
        self._collections = collections
        self._auth = auth

    def handle(self, req: Request) -> Reply:
        """Answer one request to ``/https/<uuid>/<path>``."""
        _, _, rest = req.path.partition("/")
        collection_id, _, path = rest.partition("/")
        with self._lock:
            coll = self._collections.get(collection_id.lower())
        if coll is None:
            raise _error(404, "NotFound", f"No collection {collection_id!r} on this server")
        self._authorize(req, coll)
        try:
            local = coll.resolve("/" + path)
        except ValueError as exc:
            raise _error(403, "PermissionDenied", str(exc)) from None
        if req.method in ("GET", "HEAD"):
            return self._get(req, local, path)
        if req.method == "PUT":
            return self._put(req, coll, local, path)
        if req.method == "DELETE":
            if not local.is_file():
                raise _error(404, "NotFound", f"'/{path}' not found") if not local.exists() \
                    else _error(403, "PermissionDenied", f"'/{path}' is a directory")
            local.unlink()
            return Reply(204)
        raise _error(405, "MethodNotAllowed", f"{req.method} not supported", Allow="GET, HEAD, PUT, DELETE")

    def _authorize(self, req: Request, coll: Collection) -> None:
        bearer = req.bearer()
        record = self._auth.lookup(bearer)
        challenge = {"WWW-Authenticate": 'Bearer realm="FakeGlobus collection"'}
        if record is None or record.expired:
            raise ApiError(401, {"code": "AuthenticationFailed", "http_response_code": 401,
                                 "message": "Missing, invalid or expired bearer token"}, challenge)
        if record.resource_server != coll.id:
            raise _error(403, "PermissionDenied", "The token is not valid for this collection")

    def _get(self, req: Request, local: Path, path: str) -> Reply:
        if not local.exists():
            raise _error(404, "NotFound", f"'/{path}' not found")
        if local.is_dir():
            raise _error(403, "PermissionDenied", f"'/{path}' is a directory")
        st = local.stat()
        size = st.st_size
        headers = {
            "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
            "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True),
            "ETag": f'"{st.st_mtime_ns:x}-{size:x}"',
        }
        start, length, status = 0, size, 200
        spec = req.headers.get("Range")
        if spec:
            match = _RANGE.match(spec.strip())
            if not match or (not match.group(1) and not match.group(2)):
                raise _error(416, "RangeNotSatisfiable", f"Bad Range {spec!r}", **{"Content-Range": f"bytes */{size}"})
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:
                start, end = max(size - int(match.group(2)), 0), size - 1
            if start >= size or end < start:
                raise _error(416, "RangeNotSatisfiable", f"Range {spec!r} outside 0-{size}",
                             **{"Content-Range": f"bytes */{size}"})
            length, status = end - start + 1, 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return Reply(status, headers=headers, file=local, start=start, length=length)

    def _put(self, req: Request, coll: Collection, local: Path, path: str) -> Reply:
        if not path or local.is_dir():
            raise _error(403, "PermissionDenied", f"'/{path}' is a directory")
        if not local.parent.is_dir():
            raise _error(404, "NotFound", f"Parent directory of '/{path}' not found")
        existed = local.exists()
        tmp = local.parent / f".{local.name}.fakeglobus-{secrets.token_hex(4)}.part"
        try:
            tmp.write_bytes(req.body)
            with self._lock:
                corrupt = coll.corrupt
            if corrupt:
                flip_byte(tmp)
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)
        return json_reply(200 if existed else 201, {"code": "OK" if existed else "Created", "path": f"/{path}",
                                                    "size": len(req.body)})
