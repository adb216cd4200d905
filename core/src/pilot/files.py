"""Plain local file helpers (not a plugin): a temporary sibling name, SHA-256 of a file, a copy
through a temporary name, and a read-only hard link that falls back to a copy. The local data
backend writes with them; the agent links a replica that a backend says is on this host
(``DataBackend.local_path``) with ``link_or_copy``."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid

from pilot.errors import PilotError
from pilot.plugin.types import FileInfo

CHUNK = 1 << 20


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
