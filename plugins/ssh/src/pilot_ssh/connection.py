"""SSH connections for the adaptor, on asyncssh: one event-loop thread per adaptor, one connection
per (host, port, user, known_hosts, keys, config), reused by every call and reopened once when it
dropped.

Host keys are checked against ``known_hosts`` (``extra.known_hosts``, ``$PILOT_SSH_KNOWN_HOSTS``,
the ``UserKnownHostsFile`` of the SSH config, else ``~/.ssh/known_hosts``); an unknown host is an
error, never accepted, and a config that turns checking off is refused. Authentication uses
``extra.identity_file`` / ``$PILOT_SSH_IDENTITY``, else the SSH config's ``IdentityFile``, the
default keys and the SSH agent (``$SSH_AUTH_SOCK``). ``~/.ssh/config`` (or ``extra.ssh_config`` /
``$PILOT_SSH_CONFIG``) is honoured: ``Host`` aliases, ``HostName``, ``Port``, ``User`` ...
Nothing secret is logged: commands may be logged, their standard input (the scripts) never.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import dataclasses
import os
import threading
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from pilot.errors import PilotError
from pilot.log import get_logger

if TYPE_CHECKING:
    import asyncssh

T = TypeVar("T")
KNOWN_HOSTS_ENV = "PILOT_SSH_KNOWN_HOSTS"
IDENTITY_ENV = "PILOT_SSH_IDENTITY"
CONFIG_ENV = "PILOT_SSH_CONFIG"
#: Seconds to open a connection, and to run one remote command.
CONNECT_TIMEOUT = 30.0
COMMAND_TIMEOUT = 120.0


@dataclasses.dataclass(frozen=True)
class Target:
    """Where to log in and how: host (maybe a ``Host`` alias of the SSH config), port and user
    when the URL gives them, and the files that decide trust and identity."""

    host: str
    port: int | None
    user: str | None
    known_hosts: str | None = None
    identities: tuple[str, ...] = ()
    config: str | None = None

    def where(self) -> str:
        """``[user@]host[:port]``, for messages."""
        return f"{self.user + '@' if self.user else ''}{self.host}{f':{self.port}' if self.port else ''}"

    def with_options(self, options: Mapping[str, Any]) -> Target:
        """This target with the files named in ``options`` (a description's ``extra``), else
        in ``$PILOT_SSH_KNOWN_HOSTS``, ``$PILOT_SSH_IDENTITY`` and ``$PILOT_SSH_CONFIG``."""
        known = options.get("known_hosts") or os.environ.get(KNOWN_HOSTS_ENV)
        ident = options.get("identity_file") or os.environ.get(IDENTITY_ENV)
        config = options.get("ssh_config") or os.environ.get(CONFIG_ENV)
        for key, value in (("known_hosts", known), ("ssh_config", config)):
            if value is not None and not isinstance(value, str):
                raise PilotError(f"extra.{key} must be a path, got {value!r}", key="extra")
        idents = [ident] if isinstance(ident, str) else list(ident or ())
        if not all(isinstance(i, str) for i in idents):
            raise PilotError(f"extra.identity_file must be a path or a list of paths, got {ident!r}", key="extra")
        return dataclasses.replace(
            self, known_hosts=os.path.expanduser(known) if known else None,
            identities=tuple(os.path.expanduser(i) for i in idents),
            config=os.path.expanduser(config) if config else None)


def parse_service_url(url: str) -> Target:
    """``ssh://[user@]host[:port]`` (a trailing ``/`` is fine); ``PilotError`` for a password, a
    path or no host."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise PilotError(f"not a valid SSH URL: {exc}", key="service_url") from None
    if parts.scheme.lower() != "ssh" or not parts.hostname:
        raise PilotError(f"not an SSH pilot URL: {url!r} (expected ssh://[user@]host[:port])", key="service_url")
    if parts.password is not None:
        raise PilotError("passwords are not accepted in SSH URLs; use keys or an SSH agent", key="service_url")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise PilotError(f"SSH pilot URL {parts.scheme}://{parts.netloc}: no path or query expected; put the "
                         "pilot sandboxes in working_directory", key="service_url")
    user = urllib.parse.unquote(parts.username) if parts.username else None
    return Target(parts.hostname, port, user)


class Connections:
    """Open connections, on an event loop in a thread of their own; safe from many threads."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pool: dict[Target, asyncssh.SSHClientConnection] = {}
        self._connecting: dict[Target, asyncio.Lock] = {}
        self._pid = os.getpid()
        self.connections_made = 0

    def call(self, factory: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Run the coroutine ``factory()`` on the loop thread and wait for its result."""
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the loop thread and sockets are the parent's
                self._loop, self._thread, self._pool, self._connecting = None, None, {}, {}
                self._pid = os.getpid()
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="pilot-ssh", daemon=True)
                self._thread.start()
                atexit.register(self.close)
            loop = self._loop
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(factory(), loop)  # type: ignore[arg-type]
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise PilotError(f"SSH operation timed out after {timeout:g} s") from None

    def close(self) -> None:
        """Close every connection and stop the loop thread."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return

        async def shutdown() -> None:
            for conn in list(self._pool.values()):
                conn.close()
            self._pool.clear()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        except Exception as exc:  # closing is best effort
            get_logger().debug("closing SSH connections failed", error=str(exc))
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    async def connect(self, t: Target) -> asyncssh.SSHClientConnection:
        """The open connection to ``t``, made when there is none."""
        conn = self._pool.get(t)
        if conn is not None and not conn.is_closed():
            return conn
        lock = self._connecting.setdefault(t, asyncio.Lock())
        async with lock:
            conn = self._pool.get(t)
            if conn is None or conn.is_closed():
                conn = self._pool[t] = await _open(t)
                self.connections_made += 1
            return conn

    def drop(self, t: Target, conn: asyncssh.SSHClientConnection) -> None:
        """Forget a broken connection, so the next call opens a new one."""
        if self._pool.get(t) is conn:
            del self._pool[t]
            conn.close()

    def run(self, t: Target, command: str, stdin: str = "", timeout: float = COMMAND_TIMEOUT) -> tuple[int, str, str]:
        """Run ``command`` on ``t`` with ``stdin``; ``(exit status, stdout, stderr)``. A connection
        that dropped is reopened once."""
        import asyncssh

        async def attempt(retry: bool) -> tuple[int, str, str]:
            conn = await self.connect(t)
            try:
                done = await conn.run(command, input=stdin, check=False, timeout=timeout)
            except (asyncssh.ChannelOpenError, asyncssh.ConnectionLost, ConnectionError, BrokenPipeError) as exc:
                self.drop(t, conn)
                if retry:
                    return await attempt(False)
                raise PilotError(f"SSH connection to {t.where()} lost: {exc}") from None
            except asyncssh.TimeoutError:
                raise PilotError(f"remote command on {t.where()} timed out after {timeout:g} s") from None
            status = done.exit_status if done.exit_status is not None else 255
            return int(status), _text(done.stdout), _text(done.stderr)

        return self.call(lambda: attempt(True), timeout + CONNECT_TIMEOUT + 10)


def _text(data: Any) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)


async def _open(t: Target) -> asyncssh.SSHClientConnection:
    """Connect to ``t`` with host keys checked; ``PilotError`` with the remedy otherwise."""
    import asyncssh

    kwargs: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, "config": [t.config] if t.config else ()}
    if t.port is not None:
        kwargs["port"] = t.port
    if t.user is not None:
        kwargs["username"] = t.user
    if t.known_hosts:
        kwargs["known_hosts"] = t.known_hosts
    if t.identities:
        kwargs["client_keys"] = list(t.identities)
    try:
        options = asyncssh.SSHClientConnectionOptions(host=t.host, **kwargs)
    except (OSError, ValueError, asyncssh.Error) as exc:
        raise PilotError(f"bad SSH settings for {t.where()}: {exc}") from None
    if options.known_hosts is None:  # "UserKnownHostsFile none" in the config: no checking at all
        raise PilotError(f"the SSH config turns host key checking off for {t.where()} (UserKnownHostsFile none); "
                         "pilots need checked host keys: name a known_hosts file")
    try:
        return await asyncssh.connect(t.host, **kwargs)
    except asyncssh.HostKeyNotVerifiable as exc:
        where = t.known_hosts or "the SSH config's UserKnownHostsFile or ~/.ssh/known_hosts"
        port = t.port or 22
        raise PilotError(
            f"host key of {t.host} port {port} is not trusted: not found in {where} ({exc.reason}); "
            f"check the host's fingerprint and add it (ssh-keyscan -p {port} {t.host}), "
            f"or name the right file in extra.known_hosts / ${KNOWN_HOSTS_ENV}") from None
    except asyncssh.PermissionDenied:
        raise PilotError(f"SSH authentication failed for {t.where()}: no accepted key (set extra.identity_file or "
                         f"${IDENTITY_ENV}, an IdentityFile in the SSH config, or load the key into an SSH agent)"
                         ) from None
    except (TimeoutError, OSError, asyncssh.Error) as exc:
        raise PilotError(f"cannot connect to {t.where()}: {exc or type(exc).__name__}") from None
