"""Verified file transfers between local files and data backends, retried on transient errors.

Every transfer is checked against what was expected (size always, the checksum when both sides
give one) and retried with tenacity when the backend raises ``TransientDataError``. Backends
write under temporary names and rename, so no half file ever carries its final name.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import tenacity

from pilot.errors import PilotError, TransientDataError
from pilot.plugin.types import BatchDataBackend, DataBackend, FileInfo

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
    return _verify_put(retried(backend.put, local_path, url, options), expected, local_path, url)


def _verify_put(got: FileInfo, expected: FileInfo, local_path: str, url: str) -> FileInfo:
    if got.checksum and not expected.checksum:
        from pilot.files import sha256_of

        expected = FileInfo(expected.name, expected.size, sha256_of(local_path))
    return verify(got, expected, f"storing {local_path} at {url}")


def get(session: Session, url: str, local_path: str, options: Mapping[str, Any],
        expected: FileInfo | None = None) -> FileInfo:
    """Fetch a backend URL into a local file, verified against ``expected``."""
    backend = session.data_backend(url)
    with _landing(local_path) as temp:
        got = verify(retried(backend.get, url, temp, options), expected, f"fetching {url}")
    return got


@contextlib.contextmanager
def _landing(local_path: str) -> Iterator[str]:
    """A temporary name beside ``local_path`` to fetch into: renamed to ``local_path`` when the
    block ends well (the fetched file verified), removed otherwise."""
    target = os.path.abspath(local_path)
    temp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.pilot-fetch-{secrets.token_hex(6)}")
    try:
        yield temp
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


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


def batch_of(backend: DataBackend, method: str) -> BatchDataBackend | None:
    """``backend`` when it has the ``BatchDataBackend`` method ``method``, else None."""
    return cast(BatchDataBackend, backend) if callable(getattr(backend, method, None)) else None


def put_files(session: Session, items: Sequence[tuple[str, str, FileInfo | None]],
              options: Mapping[str, Any]) -> list[FileInfo]:
    """Store ``(local_path, url, expected)`` items (all in one place), verified: in one batch
    when the backend has ``put_many``."""
    batch = batch_of(session.data_backend(items[0][1]), "put_many") if len(items) > 1 else None
    if batch is None:
        return [put(session, path, url, options, expected) for path, url, expected in items]
    expected = [e or local_info(path) for path, _, e in items]
    got = retried(batch.put_many, [(path, url) for path, url, _ in items], options)
    return [_verify_put(g, e, path, url) for g, e, (path, url, _) in zip(got, expected, items, strict=True)]


def get_files(session: Session, items: Sequence[tuple[str, str, FileInfo | None]],
              options: Mapping[str, Any]) -> list[FileInfo]:
    """Fetch ``(url, local_path, expected)`` items (all from one place), verified: in one batch
    when the backend has ``get_many``."""
    batch = batch_of(session.data_backend(items[0][0]), "get_many") if len(items) > 1 else None
    if batch is None:
        return [get(session, url, path, options, expected) for url, path, expected in items]
    with contextlib.ExitStack() as landings:
        temps = [landings.enter_context(_landing(path)) for _, path, _ in items]
        got = retried(batch.get_many, [(url, temp) for (url, _, _), temp in zip(items, temps, strict=True)], options)
        return [verify(g, e, f"fetching {url}") for g, (url, _, e) in zip(got, items, strict=True)]


def copy_files(session: Session, items: Sequence[tuple[str, str, FileInfo | None]], src_options: Mapping[str, Any],
               dst_options: Mapping[str, Any]) -> list[FileInfo]:
    """Copy ``(src_url, dst_url, expected)`` items (one source place, one destination place),
    verified, in as few operations as the backends allow: one ``copy_many`` inside a backend
    that has it, one ``put_many`` from files on this host, one ``get_many`` into them."""
    if not items:
        return []
    src_backend, dst_backend = session.data_backend(items[0][0]), session.data_backend(items[0][1])
    if len(items) > 1:
        copier = batch_of(src_backend, "copy_many") if src_backend is dst_backend else None
        if copier is not None:
            options = {**src_options, **dst_options}
            got = retried(copier.copy_many, [(src, dst) for src, dst, _ in items], options)
            return [verify(g, e, f"copying {src} to {dst}") for g, (src, dst, e) in zip(got, items, strict=True)]
        local_sources = [src_backend.local_path(src) for src, _, _ in items]
        if batch_of(dst_backend, "put_many") is not None and all(local_sources):
            return put_files(session, [(cast(str, path), dst, e)
                                       for path, (_, dst, e) in zip(local_sources, items, strict=True)], dst_options)
        local_targets = [dst_backend.local_path(dst) for _, dst, _ in items]
        if batch_of(src_backend, "get_many") is not None and all(local_targets):
            return get_files(session, [(src, cast(str, path), e)
                                       for path, (src, _, e) in zip(local_targets, items, strict=True)], src_options)
    return [copy(session, src, src_options, dst, dst_options, expected=e) for src, dst, e in items]
