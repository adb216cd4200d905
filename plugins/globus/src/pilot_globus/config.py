"""Globus settings: the ``[globus]`` table of the site configuration and the environment.

    [globus]
    client_id = "<native app client id>"        # for `pilot globus login` (app.globus.org/settings/developers)
    client_credentials_file = "/etc/pilot/globus-client.toml"   # 0600: client_id and client_secret
    token_dir = "~/.config/pilot/globus"        # where `pilot globus login` keeps tokens (0600)
    task_timeout = 3600                         # seconds a Transfer task may stay ACTIVE
    local_collection = "dtn"                    # a collection whose files this host sees

    [globus.collections.dtn]
    id = "<collection uuid>"
    local_path = "/gpfs/project"                # the collection's root as this host sees it
    data_access = true                          # GCSv5 mapped collection: needs a data_access consent

``PILOT_GLOBUS_CLIENT_ID`` and ``PILOT_GLOBUS_CLIENT_SECRET`` (both) make a confidential client
from the environment; ``PILOT_GLOBUS_CLIENT_ID`` alone names the native app.
``PILOT_GLOBUS_TOKEN_DIR`` overrides ``token_dir``. Nothing here is a secret except what the
credentials file and ``PILOT_GLOBUS_CLIENT_SECRET`` hold, and neither is ever logged or stored.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import stat
import tomllib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pilot.errors import PilotError
from pilot.site import load_section, section_line

CLIENT_ID_ENV = "PILOT_GLOBUS_CLIENT_ID"
CLIENT_SECRET_ENV = "PILOT_GLOBUS_CLIENT_SECRET"  # noqa: S105 - a variable name
TOKEN_DIR_ENV = "PILOT_GLOBUS_TOKEN_DIR"  # noqa: S105 - a variable name
KEYS = ("client_id", "client_credentials_file", "token_dir", "task_timeout", "local_collection", "collections")
COLLECTION_KEYS = ("id", "local_path", "data_access", "description")
DEFAULT_TASK_TIMEOUT = 3600.0


@dataclasses.dataclass(frozen=True)
class Collection:
    """A collection the site configuration names."""

    name: str
    id: str
    local_path: str | None = None
    data_access: bool = True


@dataclasses.dataclass(frozen=True)
class Credentials:
    """A confidential client's id and secret (never printed: ``repr`` hides the secret)."""

    client_id: str
    client_secret: str = dataclasses.field(repr=False)
    source: str = "environment"


@dataclasses.dataclass(frozen=True)
class GlobusSettings:
    """Everything the backend and ``pilot globus`` need to know about the site's Globus setup."""

    client_id: str | None = None
    credentials: Credentials | None = None
    token_dir: Path = Path("~/.config/pilot/globus")
    task_timeout: float = DEFAULT_TASK_TIMEOUT
    local_collection: str | None = None
    collections: Mapping[str, Collection] = dataclasses.field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def collection_id(self, name_or_id: str) -> str:
        """The UUID a ``globus://`` URL's host names: a UUID, or a configured collection's name."""
        if name_or_id in self.collections:
            return self.collections[name_or_id].id
        try:
            return str(uuid.UUID(name_or_id))
        except ValueError:
            known = ", ".join(sorted(self.collections)) or "none"
            raise PilotError(f"globus://{name_or_id}/: not a collection UUID and not a collection of the site "
                             f"configuration ([globus.collections.<name>]; configured: {known})") from None

    def collection(self, collection_id: str) -> Collection:
        """The configured collection with this id, or a default one."""
        for entry in self.collections.values():
            if entry.id == collection_id:
                return entry
        return Collection(collection_id, collection_id)


def _problem(sources: tuple[str, ...], table: str, key: str | None, message: str) -> PilotError:
    where = f"{table}.{key}" if key else table
    path = sources[-1] if sources else "site configuration"
    line = section_line(path, table, key) if sources else 1
    return PilotError(f"{path}: line {line}: {where}: {message}", key=key)


def as_uuid(value: Any) -> str | None:
    """The canonical form of a UUID, or None when ``value`` is not one."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def _collections(table: Any, sources: tuple[str, ...]) -> dict[str, Collection]:
    if not isinstance(table, dict):
        raise _problem(sources, "globus", "collections", "must be a table of [globus.collections.<name>] tables")
    out = {}
    for name, entry in table.items():
        where = f"globus.collections.{name}"
        if not isinstance(entry, dict):
            raise _problem(sources, "globus.collections", name, "must be a table")
        for key in entry:
            if key not in COLLECTION_KEYS:
                near = difflib.get_close_matches(key, COLLECTION_KEYS, n=1)
                raise _problem(sources, where, key, "unknown key" + (f"; did you mean {near[0]!r}?" if near else
                                                                     f"; known keys: {', '.join(COLLECTION_KEYS)}"))
        cid = as_uuid(entry.get("id"))
        if cid is None:
            raise _problem(sources, where, "id", f"must be the collection's UUID, got {entry.get('id')!r}")
        local = entry.get("local_path")
        if local is not None and (not isinstance(local, str) or not os.path.isabs(os.path.expanduser(local))):
            raise _problem(sources, where, "local_path", f"must be an absolute path, got {local!r}")
        access = entry.get("data_access", True)
        if not isinstance(access, bool):
            raise _problem(sources, where, "data_access", f"must be true or false, got {access!r}")
        out[name] = Collection(name, cid, os.path.expanduser(local) if local else None, access)
    return out


def read_credentials_file(path: str) -> Credentials:
    """A confidential client's credentials from a TOML file that only its owner may read."""
    file = Path(path).expanduser()
    try:
        mode = file.stat().st_mode
        text = file.read_text()
    except OSError as exc:
        raise PilotError(f"Globus client credentials file {file}: {exc.strerror or exc}") from None
    if stat.S_IMODE(mode) & 0o077:
        raise PilotError(f"Globus client credentials file {file} may be read by others (mode "
                         f"{stat.S_IMODE(mode):04o}); make it private: chmod 600 {file}")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise PilotError(f"Globus client credentials file {file}: not valid TOML; it holds "
                         f'client_id = "..." and client_secret = "..."') from None
    client_id, secret = as_uuid(data.get("client_id")), data.get("client_secret")
    if client_id is None or not isinstance(secret, str) or not secret:
        raise PilotError(f"Globus client credentials file {file} must hold client_id (a UUID) and client_secret")
    return Credentials(client_id, secret, str(file))


def load_settings(environ: Mapping[str, str] | None = None) -> GlobusSettings:
    """The site's Globus settings, read now (site files, then the environment)."""
    table, sources = load_section("globus")
    return settings_from(table, sources, os.environ if environ is None else environ)


def settings_from(table: Mapping[str, Any], sources: tuple[str, ...], env: Mapping[str, str]) -> GlobusSettings:
    """Settings from a ``[globus]`` table (read from ``sources``) and the environment ``env``;
    ``PilotError`` naming file, line and key for anything wrong."""
    for key in table:
        if key not in KEYS:
            near = difflib.get_close_matches(key, KEYS, n=1)
            raise _problem(sources, "globus", key, "unknown key" + (f"; did you mean {near[0]!r}?" if near else
                                                                   f"; known keys: {', '.join(KEYS)}"))
    collections = _collections(table.get("collections", {}), sources)
    client_id = table.get("client_id")
    if client_id is not None and as_uuid(client_id) is None:
        raise _problem(sources, "globus", "client_id", f"must be a UUID (a native app's client id), got {client_id!r}")
    timeout = table.get("task_timeout", DEFAULT_TASK_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise _problem(sources, "globus", "task_timeout", f"must be a positive number of seconds, got {timeout!r}")
    local = table.get("local_collection")
    if local is not None:
        if local not in collections:
            raise _problem(sources, "globus", "local_collection",
                           f"names no [globus.collections.{local}] table")
        if collections[local].local_path is None:
            raise _problem(sources, "globus", "local_collection",
                           f"collection {local!r} has no local_path (where this host sees its files)")
    credentials = None
    if env.get(CLIENT_ID_ENV) and env.get(CLIENT_SECRET_ENV):
        cid = as_uuid(env[CLIENT_ID_ENV])
        if cid is None:
            raise PilotError(f"{CLIENT_ID_ENV} must be a client UUID")
        credentials = Credentials(cid, env[CLIENT_SECRET_ENV])
    elif table.get("client_credentials_file"):
        credentials = read_credentials_file(str(table["client_credentials_file"]))
    token_dir = env.get(TOKEN_DIR_ENV) or table.get("token_dir") or _default_token_dir(env)
    return GlobusSettings(client_id=as_uuid(env.get(CLIENT_ID_ENV) or client_id) if (env.get(CLIENT_ID_ENV) or
                                                                                     client_id) else None,
                          credentials=credentials, token_dir=Path(str(token_dir)).expanduser(),
                          task_timeout=float(timeout), local_collection=collections[local].id if local else None,
                          collections=collections, sources=sources)


def _default_token_dir(env: Mapping[str, str]) -> Path:
    config_home = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or "~").expanduser() / ".config")
    return Path(config_home) / "pilot" / "globus"
