"""Verified file transfers between local files and data backends, retried on transient errors.

Every transfer is checked against what was expected (size always, the checksum when both sides
give one) and retried with tenacity when the backend raises ``TransientDataError``. Backends
write under temporary names and rename, so no half file ever carries its final name.
"""

from __future__ import annotations

import os
import tempfile
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity

from pilot.errors import PilotError, TransientDataError
from pilot.plugin.types import FileInfo

if TYPE_CHECKING:
    from pilot.session import Session

T = TypeVar("T")
ATTEMPTS = 4


def retried(func: Callable[..., T], *args: Any) -> T:
    """``func(*args)``, retried on ``TransientDataError`` (4 attempts, jittered backoff)."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientDataError),
        wait=tenacity.wait_random_exponential(multiplier=0.05, max=2.0),
        stop=tenacity.stop_after_attempt(ATTEMPTS), reraise=True)
    return retrying(func, *args)


def is_local(url: str) -> bool:
    """True for ``file://`` URLs and bare paths."""
    return urllib.parse.urlsplit(url).scheme.lower() in ("", "file")


def join(place: str, *names: str) -> str:
    """``place/name/...`` for a URL or a bare path."""
    if urllib.parse.urlsplit(place).scheme:
        return "/".join([place.rstrip("/"), *(urllib.parse.quote(n) for n in names)])
    return os.path.join(place, *names)


def base_name(url: str) -> str:
    """The file name of a URL or path."""
    parts = urllib.parse.urlsplit(url)
    path = urllib.parse.unquote(parts.path) if parts.scheme else url
    name = os.path.basename(path.rstrip("/"))
    if not name:
        raise PilotError(f"{url!r} names no file")
    return name


def verify(got: FileInfo, expected: FileInfo | None, what: str) -> FileInfo:
    """Raise ``PilotError`` unless ``got`` matches ``expected`` in size and (when both have one)
    checksum."""
    if expected is not None:
        if got.size != expected.size:
            raise PilotError(f"{what}: size mismatch ({got.size} bytes stored, {expected.size} expected)")
        if got.checksum and expected.checksum and got.checksum != expected.checksum:
            raise PilotError(f"{what}: checksum mismatch ({got.checksum} stored, {expected.checksum} expected)")
    return got


def local_info(path: str) -> FileInfo:
    """Size of a local file; ``PilotError`` naming the path when it does not exist."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise PilotError(f"no such file: {path} ({exc.strerror or exc})") from None
    if not os.path.isfile(path):
        raise PilotError(f"not a regular file: {path}")
    return FileInfo(os.path.basename(path), st.st_size)


def put(session: Session, local_path: str, url: str, options: Mapping[str, Any],
        expected: FileInfo | None = None) -> FileInfo:
    """Store a local file at a backend URL, verified."""
    expected = expected or local_info(local_path)
    backend = session.data_backend(url)
    got = retried(backend.put, local_path, url, options)
    if got.checksum and not expected.checksum:
        from pilot.files import sha256_of

        expected = FileInfo(expected.name, expected.size, sha256_of(local_path))
    return verify(got, expected, f"storing {local_path} at {url}")


def get(session: Session, url: str, local_path: str, options: Mapping[str, Any],
        expected: FileInfo | None = None) -> FileInfo:
    """Fetch a backend URL into a local file, verified against ``expected``."""
    backend = session.data_backend(url)
    got = retried(backend.get, url, local_path, options)
    return verify(got, expected, f"fetching {url}")


def copy(session: Session, src: str, src_options: Mapping[str, Any], dst: str, dst_options: Mapping[str, Any], *,
         expected: FileInfo | None = None) -> FileInfo:
    """Copy between two backend URLs: inside one backend when both share it, else through a
    local temporary file."""
    src_backend, dst_backend = session.data_backend(src), session.data_backend(dst)
    if src_backend is dst_backend:
        options = {**src_options, **dst_options}
        return verify(retried(src_backend.copy, src, dst, options), expected, f"copying {src} to {dst}")
    with tempfile.TemporaryDirectory(prefix="pilot-copy-") as tmp:
        local = os.path.join(tmp, "data")
        fetched = get(session, src, local, src_options, expected)
        return put(session, local, dst, dst_options, fetched)
