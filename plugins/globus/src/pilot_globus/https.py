"""Files between this host and a collection over the collection's HTTPS server.

Globus Connect Server collections serve HTTPS at the ``https_server`` of their collection
document, with a token of the collection's own ``https`` scope. An upload goes to a hidden
temporary name and is renamed through the Transfer API, then its size is checked with HEAD; a
download is written to a temporary name beside its target, its size and SHA-256 checked, and
renamed. No Globus Connect Personal is needed. TLS is verified as globus-sdk verifies it
(``GLOBUS_SDK_VERIFY_SSL`` may name a CA bundle).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import threading
import urllib.parse
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from pilot.errors import PilotError, TransientDataError
from pilot.files import sha256_of
from pilot.plugin.types import FileInfo
from pilot_globus.auth import GlobusAuth, login_hint

if TYPE_CHECKING:
    import requests

CHUNK = 1 << 20
TEMP_MARK = ".pilot-part-"


def temp_name(name: str) -> str:
    """The hidden name a file is uploaded under before it is renamed."""
    return f".{name}{TEMP_MARK}{uuid.uuid4().hex[:12]}"


def is_temp(name: str) -> bool:
    """True for the temporary names of uploads under way (never listed)."""
    return name.startswith(".") and TEMP_MARK in name


class CollectionHTTPS:
    """HTTPS GET, PUT and HEAD against collections' HTTPS servers."""

    def __init__(self, auth: GlobusAuth, server_of: Callable[[str], str]) -> None:
        self.auth = auth
        self.server_of = server_of
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = requests.Session()
            self._local.session = session
        return session

    def _url(self, collection: str, path: str) -> str:
        return self.server_of(collection).rstrip("/") + urllib.parse.quote(path if path.startswith("/") else "/" + path)

    def _request(self, method: str, collection: str, path: str, *, body_path: str | None = None,
                 stream: bool = False) -> requests.Response:
        import requests
        from globus_sdk.config import get_http_timeout, get_ssl_verify

        what = f"{method} {path} on collection {collection}"
        for renew in (False, True):
            headers = {"Authorization": self.auth.https_header(collection, renew=renew)}
            try:
                if body_path is not None:
                    with open(body_path, "rb") as body:
                        response = self._session().request(method, self._url(collection, path), data=body,
                                                           headers=headers, timeout=get_http_timeout() or 60,
                                                           verify=get_ssl_verify())
                else:
                    response = self._session().request(method, self._url(collection, path), headers=headers,
                                                       stream=stream, timeout=get_http_timeout() or 60,
                                                       verify=get_ssl_verify())
            except requests.exceptions.SSLError as exc:
                raise PilotError(f"{what}: TLS verification failed ({exc}); the collection's "
                                 "certificate is not trusted (GLOBUS_SDK_VERIFY_SSL may name a CA bundle)") from None
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise TransientDataError(f"{what}: {type(exc).__name__}") from None
            except OSError as exc:
                raise PilotError(f"{what}: {exc.strerror or exc}") from None
            if response.status_code == 401 and not renew:
                response.close()
                continue
            break
        status = response.status_code
        if status < 300:
            return response
        response.close()
        if status >= 500 or status == 429:
            raise TransientDataError(f"{what}: HTTP {status}")
        if status in (401, 403):
            raise PilotError(f"{what}: HTTP {status}, not allowed; if you have access, run "
                             f"`{login_hint([collection])}`")
        if status == 404:
            raise PilotError(f"{what}: not found (HTTP 404)")
        raise PilotError(f"{what}: HTTP {status}")

    def size(self, collection: str, path: str) -> int:
        """The size of a file, by HEAD."""
        response = self._request("HEAD", collection, path)
        try:
            return int(response.headers["Content-Length"])
        except (KeyError, ValueError):
            raise PilotError(f"HEAD {path} on collection {collection}: no Content-Length") from None

    def upload(self, local_path: str, collection: str, temp_path: str) -> FileInfo:
        """PUT a local file at ``temp_path``; its name, size and SHA-256 as sent."""
        try:
            size, checksum = os.stat(local_path).st_size, sha256_of(local_path)
        except OSError as exc:
            raise PilotError(f"no such file: {local_path} ({exc.strerror or exc})") from None
        self._request("PUT", collection, temp_path, body_path=local_path).close()
        return FileInfo(os.path.basename(local_path), size, checksum)

    def download(self, collection: str, path: str, local_path: str) -> FileInfo:
        """GET a file into ``local_path`` (through a temporary name), size and SHA-256 checked."""
        target = os.path.abspath(local_path)
        temp = os.path.join(os.path.dirname(target), temp_name(os.path.basename(target)))
        response = self._request("GET", collection, path, stream=True)
        digest, size = hashlib.sha256(), 0
        try:
            expected = response.headers.get("Content-Length")
            with open(temp, "wb") as out:
                for chunk in response.iter_content(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            if expected is not None and int(expected) != size:
                raise TransientDataError(f"GET {path} on collection {collection}: {size} of {expected} bytes arrived")
            os.replace(temp, target)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            if isinstance(exc, OSError) and not isinstance(exc, PilotError):
                import requests

                if isinstance(exc, requests.RequestException):
                    raise TransientDataError(f"GET {path} on collection {collection}: {type(exc).__name__}") from None
                raise PilotError(f"fetching {path} into {local_path}: {exc.strerror or exc}") from None
            raise
        finally:
            response.close()
        return FileInfo(posixpath.basename(path), size, f"sha256:{digest.hexdigest()}")
