"""The local data backend: ``file:///path`` URLs and bare paths, on this host's filesystem.

Registered as the built-in plugin ``local-data``. Files are written under a temporary name in
the destination directory and renamed (``pilot.files``); checksums are SHA-256 of the stored
file. The core reaches these files only through the backend it was given (``local_path``).
"""

from __future__ import annotations

import os
import shutil
import urllib.parse
from collections.abc import Mapping
from typing import Any

from pilot.errors import PilotError
from pilot.files import copy_file, sha256_of
from pilot.plugin import hookimpl
from pilot.plugin.types import DataBackendRecord, FileInfo


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
