"""The SFTP data backend on asyncssh: one event-loop thread per backend, one SSH connection
and SFTP session per (host, port, user, known_hosts, keys), reused by every call and thread.

Host keys are checked against ``known_hosts`` (``extra.known_hosts``, ``$PILOT_SSH_KNOWN_HOSTS``,
else ``~/.ssh/known_hosts``); an unknown host is an error, never accepted. Authentication uses
``extra.identity_file`` / ``$PILOT_SSH_IDENTITY``, else the default keys and the SSH agent
(``$SSH_AUTH_SOCK``). Nothing secret is logged or stored.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import getpass
import os
import stat
import threading
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import asyncssh

from pilot.errors import PilotError, TransientDataError
from pilot.plugin.types import FileInfo

T = TypeVar("T")
KNOWN_HOSTS_ENV = "PILOT_SSH_KNOWN_HOSTS"
IDENTITY_ENV = "PILOT_SSH_IDENTITY"
#: Ciphers tried first: AES-GCM runs on AES-NI and beats chacha20 on loopback and LANs.
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes128-ctr")


@dataclasses.dataclass(frozen=True)
class Target:
    """Where an SFTP URL points: the connection key and the remote path."""

    host: str
    port: int
    user: str
    known_hosts: str | None
    identities: tuple[str, ...]
    path: str

    @property
    def key(self) -> tuple[Any, ...]:
        return self.host, self.port, self.user, self.known_hosts, self.identities

    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def target(url: str, options: Mapping[str, Any]) -> Target:
    """Parse ``sftp://[user@]host[:port]/path``; ``PilotError`` for a password or no host."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("sftp", "ssh") or not parts.hostname:
        raise PilotError(f"not an SFTP URL: {url!r} (expected sftp://user@host:port/path)", key="service_url")
    if parts.password is not None:
        raise PilotError("passwords are not accepted in SFTP URLs; use keys or an SSH agent", key="service_url")
    known = options.get("known_hosts") or os.environ.get(KNOWN_HOSTS_ENV)
    ident = options.get("identity_file") or os.environ.get(IDENTITY_ENV)
    identities = tuple([ident] if isinstance(ident, str) else ident or ())
    path = urllib.parse.unquote(parts.path) or "."
    if path.startswith("/~/"):
        path = path[3:] or "."
    return Target(parts.hostname, parts.port or 22, urllib.parse.unquote(parts.username or getpass.getuser()),
                  os.path.expanduser(known) if known else None, tuple(os.path.expanduser(i) for i in identities),
                  path)


def _tmp(path: str) -> str:
    head, _, tail = path.rpartition("/")
    return f"{head}/.{tail}.part-{uuid.uuid4().hex[:12]}" if head or path.startswith("/") else \
        f".{tail}.part-{uuid.uuid4().hex[:12]}"


def _is_tmp(name: str) -> bool:
    return name.startswith(".") and ".part-" in name


class _Conn:
    def __init__(self, conn: asyncssh.SSHClientConnection, sftp: asyncssh.SFTPClient) -> None:
        self.conn, self.sftp = conn, sftp


class SFTPBackend:
    """SFTP storage places; safe to call from many threads."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pool: dict[tuple[Any, ...], _Conn] = {}
        self._connecting: dict[tuple[Any, ...], asyncio.Lock] = {}
        self.connections_made = 0

    # --- the loop thread --------------------------------------------------------------------
    def _run(self, factory: Callable[[], Awaitable[T]]) -> T:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="pilot-sftp", daemon=True)
                self._thread.start()
            loop = self._loop
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(factory(), loop)  # type: ignore[arg-type]
        return future.result()

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return

        async def shutdown() -> None:
            for conn in list(self._pool.values()):
                conn.sftp.exit()
                conn.conn.close()
            self._pool.clear()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    # --- connections ------------------------------------------------------------------------
    async def _connect(self, t: Target) -> _Conn:
        conn = self._pool.get(t.key)
        if conn is not None:
            return conn
        lock = self._connecting.setdefault(t.key, asyncio.Lock())
        async with lock:
            conn = self._pool.get(t.key)
            if conn is not None:
                return conn
            kwargs: dict[str, Any] = {"username": t.user, "port": t.port, "encryption_algs": list(CIPHERS),
                                      "config": []}
            kwargs["known_hosts"] = t.known_hosts if t.known_hosts else ()  # () = the default file; never None
            if t.identities:
                kwargs["client_keys"] = list(t.identities)
            try:
                ssh = await asyncssh.connect(t.host, **kwargs)
            except asyncssh.HostKeyNotVerifiable as exc:
                where = t.known_hosts or "~/.ssh/known_hosts"
                raise PilotError(
                    f"host key of {t.host} port {t.port} is not trusted: not found in {where} ({exc.reason}); "
                    f"check the host's fingerprint and add it (ssh-keyscan -p {t.port} {t.host}), "
                    "or name the right file in extra.known_hosts / $" + KNOWN_HOSTS_ENV) from None
            except asyncssh.PermissionDenied:
                raise PilotError(f"SSH authentication failed for {t.where()}: no accepted key (set extra.identity_file"
                                 f" or ${IDENTITY_ENV}, or load the key into an SSH agent)") from None
            except (OSError, asyncssh.Error) as exc:
                raise TransientDataError(f"cannot connect to {t.where()}: {exc}") from None
            try:
                sftp = await ssh.start_sftp_client()
            except (OSError, asyncssh.Error) as exc:
                ssh.close()
                raise TransientDataError(f"cannot start SFTP on {t.where()}: {exc}") from None
            conn = self._pool[t.key] = _Conn(ssh, sftp)
            self.connections_made += 1
            return conn

    def _drop(self, t: Target, conn: _Conn) -> None:
        """Forget a broken connection; the retry opens a new one."""
        if self._pool.get(t.key) is conn:
            del self._pool[t.key]
            conn.conn.close()

    def _call(self, url: str, options: Mapping[str, Any],
              body: Callable[[asyncssh.SFTPClient, Target], Awaitable[T]]) -> T:
        t = target(url, options)

        async def run() -> T:
            conn = await self._connect(t)
            try:
                return await body(conn.sftp, t)
            except (asyncssh.SFTPNoConnection, asyncssh.SFTPConnectionLost) as exc:
                self._drop(t, conn)
                raise TransientDataError(f"connection to {t.where()} lost: {exc.reason}") from None
            except asyncssh.SFTPNoSuchFile as exc:
                raise PilotError(f"no such file: {url} ({exc.reason})") from None
            except asyncssh.SFTPError as exc:
                raise PilotError(f"SFTP error on {url}: {exc.reason}") from None
            except (OSError, asyncssh.Error) as exc:
                if isinstance(exc, FileNotFoundError):
                    raise PilotError(f"no such file: {exc.filename}") from None
                if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
                    raise PilotError(f"local error with {url}: {exc.strerror or exc}") from None
                self._drop(t, conn)
                raise TransientDataError(f"connection to {t.where()} lost: {exc}") from None

        return self._run(run)

    # --- the backend protocol ---------------------------------------------------------------
    def create_place(self, url: str, options: Mapping[str, Any]) -> None:
        async def body(sftp: asyncssh.SFTPClient, t: Target) -> None:
            await sftp.makedirs(t.path, exist_ok=True)
        self._call(url, options, body)

    def put(self, local_path: str, url: str, options: Mapping[str, Any]) -> FileInfo:
        if not os.path.isfile(local_path):
            raise PilotError(f"no such file: {local_path}")

        async def body(sftp: asyncssh.SFTPClient, t: Target) -> FileInfo:
            async def write(tmp: str) -> None:
                parent = t.path.rpartition("/")[0]
                try:
                    await sftp.put(local_path, tmp)
                except asyncssh.SFTPNoSuchFile:
                    if not parent:
                        raise
                    await sftp.makedirs(parent, exist_ok=True)
                    await sftp.put(local_path, tmp)

            return await _publish(sftp, t.path, write)
        return self._call(url, options, body)

    def get(self, url: str, local_path: str, options: Mapping[str, Any]) -> FileInfo:
        local_path = os.path.abspath(local_path)
        os.makedirs(os.path.dirname(local_path), exist_ok=True)

        async def body(sftp: asyncssh.SFTPClient, t: Target) -> FileInfo:
            tmp = _tmp(local_path)
            try:
                await sftp.get(t.path, tmp)
                os.replace(tmp, local_path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            return FileInfo(os.path.basename(local_path), os.stat(local_path).st_size)
        return self._call(url, options, body)

    def list(self, url: str, options: Mapping[str, Any]) -> list[FileInfo]:
        async def body(sftp: asyncssh.SFTPClient, t: Target) -> list[FileInfo]:
            try:
                entries = await sftp.readdir(t.path)
            except asyncssh.SFTPNoSuchFile:
                return []
            return sorted((FileInfo(str(e.filename), int(e.attrs.size or 0)) for e in entries
                           if e.attrs.type == asyncssh.FILEXFER_TYPE_REGULAR and not _is_tmp(str(e.filename))),
                          key=lambda f: f.name)
        return self._call(url, options, body)

    def stat(self, url: str, options: Mapping[str, Any]) -> FileInfo:
        async def body(sftp: asyncssh.SFTPClient, t: Target) -> FileInfo:
            attrs = await sftp.stat(t.path)
            if attrs.permissions is not None and not stat.S_ISREG(attrs.permissions):
                raise PilotError(f"not a regular file: {url}")
            return FileInfo(t.path.rpartition("/")[2], int(attrs.size or 0))
        return self._call(url, options, body)

    def remove(self, url: str, options: Mapping[str, Any]) -> None:
        async def body(sftp: asyncssh.SFTPClient, t: Target) -> None:
            try:
                attrs = await sftp.lstat(t.path)
            except asyncssh.SFTPNoSuchFile:
                return
            if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
                await sftp.rmtree(t.path, ignore_errors=False)
            else:
                await sftp.remove(t.path)
        self._call(url, options, body)

    def copy(self, src_url: str, dst_url: str, options: Mapping[str, Any]) -> FileInfo:
        src, dst = target(src_url, options), target(dst_url, options)
        if src.key != dst.key:  # another server: through a local temporary file
            import tempfile

            with tempfile.TemporaryDirectory(prefix="pilot-sftp-") as tmp:
                self.get(src_url, os.path.join(tmp, "f"), options)
                return self.put(os.path.join(tmp, "f"), dst_url, options)

        async def body(sftp: asyncssh.SFTPClient, t: Target) -> FileInfo:
            parent = dst.path.rpartition("/")[0]
            if parent:
                await sftp.makedirs(parent, exist_ok=True)

            async def write(tmp: str) -> None:
                try:
                    await sftp.remote_copy(src.path, tmp)  # server side (copy-data extension)
                except asyncssh.SFTPOpUnsupported:
                    await sftp.copy(src.path, tmp)

            return await _publish(sftp, dst.path, write)
        return self._call(src_url, options, body)

    def local_path(self, url: str) -> str | None:
        return None


async def _publish(sftp: asyncssh.SFTPClient, path: str,
                   write: Callable[[str], Awaitable[None]]) -> FileInfo:
    """``write`` the file under a temporary name, then rename it to ``path``: no half file ever
    carries the final name. Returns the stored file's name and size."""
    tmp = _tmp(path)
    try:
        await write(tmp)
        await sftp.posix_rename(tmp, path)
    except BaseException:
        await _quiet_remove(sftp, tmp)
        raise
    attrs = await sftp.stat(path)
    return FileInfo(path.rpartition("/")[2], int(attrs.size or 0))


async def _quiet_remove(sftp: asyncssh.SFTPClient, path: str) -> None:
    try:
        await sftp.remove(path)
    except (OSError, asyncssh.Error):
        pass
