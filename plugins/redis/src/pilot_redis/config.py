"""Redis store URLs and where their passwords live.

URL form: ``redis://[[user]:password@]host[:port][/db][?prefix=name]`` (``rediss://`` for TLS).
Port defaults to 6379, db to 0; ``prefix`` puts every key of the store under
``pilot:<name>:`` so several stores share one database. BigJob's form ``redis://password@host``
(a user part without a colon) is a password, as BigJob read it; an ACL user whose password comes
from elsewhere writes ``redis://user:@host``.

The password never appears in the store's URL (``RedisStore.url`` is redacted, object URLs are
built from it), so a process that only has that URL finds the password, in this order, in:

1. the URL itself, when it carries one;
2. ``$PILOT_REDIS_PASSWORD``, but only for the server(s) it is meant for (``password_scope``):
   the ``host[:port]`` entries of ``$PILOT_REDIS_PASSWORD_HOSTS`` when set; else the server of
   ``$PILOT_COORDINATION_URL`` when that is a Redis URL; else loopback servers only. A pilot
   agent also trusts the store on its own ``--store``. So a URL from a shared workflow file
   that names another server never gets that password;
3. the credentials file ``$PILOT_REDIS_CREDENTIALS`` (default
   ``$XDG_CONFIG_HOME/pilot/redis-passwords``, i.e. ``~/.config/pilot/redis-passwords``): lines
   ``[user@]host:port/db password``, mode 0600. A client that opens a URL with a password
   writes (or updates) its line there, so agents of the same user (on a shared home) find it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import sys
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from pilot.errors import PilotError

PASSWORD_ENV = "PILOT_REDIS_PASSWORD"  # noqa: S105 (the name of a variable)
PASSWORD_HOSTS_ENV = "PILOT_REDIS_PASSWORD_HOSTS"  # noqa: S105 (the name of a variable)
COORDINATION_ENV = "PILOT_COORDINATION_URL"
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
CREDENTIALS_ENV = "PILOT_REDIS_CREDENTIALS"
DEFAULT_PORT = 6379
_PREFIX_OK = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_QUERY_KEYS = ("prefix",)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclasses.dataclass(frozen=True)
class RedisTarget:
    """A parsed store URL: where the server is, which db and key prefix, and the password
    if the URL carried one."""

    scheme: str
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    prefix: str | None

    @property
    def credentials_key(self) -> str:
        """How this server and db are named in the credentials file."""
        user = f"{self.username}@" if self.username else ""
        return f"{user}{self.host}:{self.port}/{self.db}"

    @property
    def url(self) -> str:
        """The canonical URL, without the password (a user name keeps its colon: ``alice:@``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{urllib.parse.quote(self.username, safe='')}:@" if self.username else ""  # the colon: a user
        query = f"?prefix={self.prefix}" if self.prefix else ""
        return f"{self.scheme}://{user}{host}:{self.port}/{self.db}{query}"

    @property
    def key_prefix(self) -> str:
        """The prefix of every key this store uses."""
        return f"pilot:{self.prefix}:" if self.prefix else "pilot:"


def parse_url(url: str) -> RedisTarget:
    """Parse and check a Redis store URL; ``PilotError`` (without the password) when malformed."""
    if not isinstance(url, str):
        raise PilotError("a Redis store URL must be a string", key="coordination_url")
    _, sep, rest = url.partition("://")
    if _CONTROL.search(url):  # urlsplit would drop tabs and newlines silently, changing a password
        raise PilotError("not a valid Redis store URL: it holds a control character (percent-encode it, "
                         "e.g. %0A for a newline, in a password)", key="coordination_url")
    if sep and "@" in rest and any(c in rest.rpartition("@")[0] for c in "/?#[]"):
        raise PilotError("not a valid Redis store URL: write '/', '?', '#', '[', ']' and '@' in a password "
                         "as %2F, %3F, %23, %5B, %5D and %40", key="coordination_url")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # its message may quote the host part, password and all
        raise PilotError("not a valid Redis store URL (unbalanced '[' or ']', or invalid characters in "
                         "its host part)", key="coordination_url") from None
    if "@" in url and "@" not in parts.netloc:  # a '/', '?' or '#' in the password split the URL there
        raise PilotError("not a valid Redis store URL: write '/', '?' and '#' in a password as %2F, %3F, %23",
                         key="coordination_url")
    try:
        port = parts.port or DEFAULT_PORT
        host, username, password = parts.hostname, parts.username, parts.password
        if username is not None and ":" not in parts.netloc.rpartition("@")[0]:
            username, password = None, username  # BigJob's redis://PASSWORD@host
    except ValueError:
        raise PilotError("not a valid Redis store URL (the port must be a number from 0 to 65535)",
                         key="coordination_url") from None
    from pilot.urls import redact

    shown = redact(url)
    expected = "expected redis://[[user]:password@]host:port/db[?prefix=name]"
    if parts.scheme not in ("redis", "rediss") or not host or parts.fragment:
        raise PilotError(f"not a Redis store URL: {shown!r} ({expected})", key="coordination_url")
    db_text = parts.path.lstrip("/") or "0"
    if not db_text.isdigit() or not db_text.isascii() or int(db_text) > 10_000:
        raise PilotError(f"Redis store URL {shown!r}: database must be a number, got {db_text!r}",
                         key="coordination_url")
    try:
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise PilotError(f"Redis store URL {shown!r}: malformed query", key="coordination_url") from None
    unknown = sorted(set(query) - set(_QUERY_KEYS))
    if unknown:
        raise PilotError(f"Redis store URL {shown!r}: unknown parameter {unknown[0]!r} (known: prefix)",
                         key="coordination_url")
    prefix = None
    if "prefix" in query:
        values = query["prefix"]
        if len(values) != 1 or not _PREFIX_OK.match(values[0]):
            raise PilotError(f"Redis store URL {shown!r}: prefix must be 1-64 letters, digits, '_', '-', '.'",
                             key="coordination_url")
        prefix = values[0]
    return RedisTarget(parts.scheme, host, port, int(db_text), urllib.parse.unquote(username) if username else None,
                       urllib.parse.unquote(password) if password else None, prefix)


def credentials_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$PILOT_REDIS_CREDENTIALS``, else ``$XDG_CONFIG_HOME/pilot/redis-passwords``."""
    env = os.environ if environ is None else environ
    if env.get(CREDENTIALS_ENV):
        return Path(env[CREDENTIALS_ENV]).expanduser()
    config_home = Path(env.get("XDG_CONFIG_HOME") or Path(env.get("HOME") or "~").expanduser() / ".config")
    return config_home / "pilot" / "redis-passwords"


def _read_entries(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except OSError:
        return {}
    entries = {}
    for line in text.splitlines():
        key, _, password = line.strip().partition(" ")
        if key and password and not key.startswith("#"):
            entries[key] = password
    return entries


def remember_password(target: RedisTarget, environ: Mapping[str, str] | None = None) -> None:
    """Write the URL's password to the credentials file (0600), replacing an older one."""
    if not target.password or "\n" in target.password or " " in target.credentials_key:
        return
    path = credentials_path(environ)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return  # best effort: the password can still come from the environment
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = _read_entries(path)
        if entries.get(target.credentials_key) == target.password:
            return
        entries[target.credentials_key] = target.password
        data = "".join(f"{key} {value}\n" for key, value in entries.items()).encode()
        temporary = f"{path}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(temporary, path)  # readers see the old file or the new one, never half of one
    except OSError:
        return
    finally:
        os.close(lock)


def _host_port(entry: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]:port`` or a Redis URL as (lower-case host, port or None)."""
    entry = entry.strip()
    if "://" in entry:
        try:
            target = parse_url(entry)
        except PilotError:
            return "", None
        return target.host.lower(), target.port
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
    else:
        host, port_text = entry, ""
    return host.lower(), int(port_text) if port_text.isdigit() else None


def _agent_store() -> str | None:
    """The ``--store`` of this process when it is a pilot agent (``python -m pilot.agent``)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if getattr(spec, "name", None) not in ("pilot.agent.__main__", "pilot.agent"):
        return None
    argv = sys.argv
    for number, arg in enumerate(argv[:-1]):
        if arg == "--store":
            return argv[number + 1]
    return None


def password_scope(environ: Mapping[str, str] | None = None) -> list[tuple[str, int | None]]:
    """The servers ``$PILOT_REDIS_PASSWORD`` is sent to, as (host, port or None for any port)."""
    env = os.environ if environ is None else environ
    if env.get(PASSWORD_HOSTS_ENV):
        scope = [_host_port(entry) for entry in env[PASSWORD_HOSTS_ENV].split(",") if entry.strip()]
    elif urllib.parse.urlsplit(env.get(COORDINATION_ENV) or "").scheme in ("redis", "rediss"):
        scope = [_host_port(env[COORDINATION_ENV])]
    else:
        scope = [(host, None) for host in LOOPBACK]
    agent_store = _agent_store() if environ is None else None
    if agent_store and urllib.parse.urlsplit(agent_store).scheme in ("redis", "rediss"):
        scope.append(_host_port(agent_store))
    return [(host, port) for host, port in scope if host]


def _in_scope(target: RedisTarget, environ: Mapping[str, str] | None) -> bool:
    host = target.host.lower()
    return any(host == h and (port is None or port == target.port) for h, port in password_scope(environ))


def find_password(target: RedisTarget, environ: Mapping[str, str] | None = None) -> str | None:
    """The password for ``target``: from its URL, ``$PILOT_REDIS_PASSWORD`` (only for the servers
    of ``password_scope``) or the credentials file (keyed by server, user and db)."""
    if target.password:
        return target.password
    env = os.environ if environ is None else environ
    if env.get(PASSWORD_ENV) and _in_scope(target, environ):
        return env[PASSWORD_ENV]
    return _read_entries(credentials_path(env)).get(target.credentials_key)
