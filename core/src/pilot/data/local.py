"""The local data backend: ``file:///path`` URLs and bare paths, on this host's filesystem.

Registered as the built-in plugin ``local-data``. Files are written under a temporary name in
the destination directory and renamed; checksums are SHA-256 of the stored file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import urllib.parse
import uuid
from collections.abc import Mapping
from typing import Any

from pilot.errors import PilotError
from pilot.plugin import hookimpl
from pilot.plugin.types import DataBackendRecord, FileInfo

CHUNK = 1 << 20


def path_of(url: str) -> str:
    """The filesystem path of a ``file://`` URL or a bare path (made absolute)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("", "file") and not (parts.scheme == "" and url.startswith("//")):
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise PilotError(f"file URL {url!r} names host {parts.netloc!r}; use file:///path")
            return os.path.abspath(urllib.parse.unquote(parts.path))
        return os.path.abspath(os.path.expanduser(url))
    raise PilotError(f"not a local file URL: {url!r}")


def tmp_name(path: str) -> str:
    """A temporary sibling of ``path``: hidden, unique, never mistaken for the final file."""
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.part-{uuid.uuid4().hex[:12]}")


def sha256_of(path: str) -> str:
    """``sha256:<hex>`` of a local file."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def copy_file(src: str, dst: str) -> FileInfo:
    """Copy ``src`` to ``dst`` through a temporary name; return the stored file's info."""
    try:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
    except OSError as exc:
        raise PilotError(f"cannot create {os.path.dirname(dst)}: {exc.strerror or exc}") from None
    tmp = tmp_name(dst)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except FileNotFoundError as exc:
        _unlink(tmp)
        raise PilotError(f"no such file: {exc.filename or src}") from None
    except OSError as exc:
        _unlink(tmp)
        raise PilotError(f"cannot copy {src} to {dst}: {exc.strerror or exc}") from None
    return FileInfo(os.path.basename(dst), os.stat(dst).st_size, sha256_of(dst))


def link_or_copy(src: str, dst: str) -> bool:
    """Hard-link ``src`` to ``dst`` (through a temporary name) when both are on one filesystem
    and a unit cannot write through the link; otherwise copy. True when linked.

    A link shares the stored replica, so the replica is made read-only first (its write bits
    cleared) and no link is made for root, whom modes do not stop: a unit writing into its
    input fails with EACCES, or writes its own copy, and never changes the data unit that later
    units read."""
    try:
        mode = os.stat(src).st_mode
        if os.geteuid() != 0 and mode & 0o222:
            os.chmod(src, mode & 0o7555)
            mode &= 0o7555
    except FileNotFoundError:
        raise PilotError(f"no such file: {src}") from None
    except OSError:  # not ours to make read-only: copy
        mode = 0o222
    if os.geteuid() == 0 or mode & 0o222:
        copy_file(src, dst)
        return False
    tmp = tmp_name(dst)
    try:
        os.link(src, tmp)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            if exc.errno == errno.ENOENT:
                raise PilotError(f"no such file: {src}") from None
            raise PilotError(f"cannot link {src} to {dst}: {exc.strerror or exc}") from None
        copy_file(src, dst)
        return False
    os.replace(tmp, dst)
    return True


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class LocalBackend:
    """Files on this host's filesystem (or a filesystem every node mounts)."""

    def create_place(self, url: str, options: Mapping[str, Any]) -> None:
        path = path_of(url)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise PilotError(f"cannot create storage place {path}: {exc.strerror or exc}") from None

    def put(self, local_path: str, url: str, options: Mapping[str, Any]) -> FileInfo:
        return copy_file(local_path, path_of(url))

    def get(self, url: str, local_path: str, options: Mapping[str, Any]) -> FileInfo:
        return copy_file(path_of(url), os.path.abspath(local_path))

    def list(self, url: str, options: Mapping[str, Any]) -> list[FileInfo]:
        path = path_of(url)
        try:
            entries = list(os.scandir(path))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise PilotError(f"cannot list {path}: {exc.strerror or exc}") from None
        return sorted((FileInfo(e.name, e.stat().st_size) for e in entries
                       if e.is_file() and not (e.name.startswith(".") and ".part-" in e.name)),
                      key=lambda info: info.name)

    def stat(self, url: str, options: Mapping[str, Any]) -> FileInfo:
        path = path_of(url)
        try:
            size = os.stat(path).st_size
        except OSError as exc:
            raise PilotError(f"no such file: {path} ({exc.strerror or exc})") from None
        return FileInfo(os.path.basename(path), size, sha256_of(path))

    def remove(self, url: str, options: Mapping[str, Any]) -> None:
        path = path_of(url)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise PilotError(f"cannot remove {path}: {exc.strerror or exc}") from None

    def copy(self, src_url: str, dst_url: str, options: Mapping[str, Any]) -> FileInfo:
        return copy_file(path_of(src_url), path_of(dst_url))

    def local_path(self, url: str) -> str | None:
        return path_of(url)

    def close(self) -> None:
        pass


@hookimpl
def pilot_data_backends() -> list[DataBackendRecord]:
    """Register the local backend for ``file://`` URLs and bare paths."""
    return [DataBackendRecord(name="local", schemes=("file",), factory=LocalBackend)]
