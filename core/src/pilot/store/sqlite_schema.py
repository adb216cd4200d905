"""The SQLite store's schema, its version and its migrations.

A store file records ``PRAGMA application_id`` (``APPLICATION_ID``: this file is a pilot store)
and ``PRAGMA user_version`` (``SCHEMA_VERSION``). Opening a file:

- empty (new): the schema is created and both marks are set;
- unmarked (a store written before the schema had a version, version 0): accepted when it holds
  every table of ours with the columns it has always had; columns added since are added
  (``ALTER TABLE ... ADD COLUMN``), the new indexes created, and the file marked;
- marked with an older version: migrated the same way;
- marked with a newer version: refused (upgrade pilot, or use another store);
- anything else (another program's database, a damaged or a non-SQLite file): ``PilotError``
  naming the file.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from pilot.errors import PilotError

SCHEMA_VERSION = 2  # 2: units.staging_in, units.staging_out (when input and output staging began)
APPLICATION_ID = 0x50494C54  # "PILT"

SCHEMA = """
CREATE TABLE IF NOT EXISTS services (id TEXT PRIMARY KEY, kind TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS links (seq INTEGER PRIMARY KEY AUTOINCREMENT, parent TEXT NOT NULL,
    child TEXT NOT NULL, UNIQUE(parent, child));
CREATE TABLE IF NOT EXISTS pilots (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
    service_id TEXT, state TEXT NOT NULL, description TEXT, sandbox TEXT, scheme TEXT, native_id TEXT,
    slots INTEGER, hosts TEXT, datacenter TEXT, machine TEXT, submitted REAL, started REAL,
    finished REAL, heartbeat REAL, heartbeat_timeout REAL, reason TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0, agent_host TEXT, agent_pid INTEGER);
CREATE INDEX IF NOT EXISTS pilots_service ON pilots(service_id);
CREATE TABLE IF NOT EXISTS units (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
    cds_id TEXT, pilot_id TEXT, state TEXT NOT NULL, claimed INTEGER NOT NULL DEFAULT 0,
    slots INTEGER NOT NULL DEFAULT 1, description TEXT, datacenter TEXT, machine TEXT,
    exit_code INTEGER, host TEXT, sandbox TEXT, submitted REAL, started REAL, finished REAL,
    reason TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    input_data TEXT, staging_in REAL, staging_out REAL);
CREATE INDEX IF NOT EXISTS units_pilot ON units(pilot_id, state, claimed);
CREATE INDEX IF NOT EXISTS units_cds ON units(cds_id, state, pilot_id);
CREATE INDEX IF NOT EXISTS units_queue ON units(cds_id, seq) WHERE pilot_id IS NULL AND state = 'Pending'
    AND datacenter IS NULL AND machine IS NULL AND input_data IS NULL;
CREATE INDEX IF NOT EXISTS units_constrained ON units(cds_id, seq) WHERE pilot_id IS NULL AND state = 'Pending'
    AND (datacenter IS NOT NULL OR machine IS NOT NULL OR input_data IS NOT NULL);
"""

#: The columns each table has had since the first release (version 0): a table lacking one is
#: not ours.
BASE_COLUMNS = {
    "services": ("id", "kind", "data"),
    "links": ("seq", "parent", "child"),
    "pilots": ("seq", "id", "service_id", "state", "description", "sandbox", "scheme", "native_id",
               "slots", "hosts", "datacenter", "machine", "submitted", "started", "finished", "heartbeat",
               "heartbeat_timeout", "reason", "cancel_requested", "agent_host", "agent_pid"),
    "units": ("seq", "id", "cds_id", "pilot_id", "state", "claimed", "slots", "description", "datacenter",
              "machine", "exit_code", "host", "sandbox", "submitted", "started", "finished", "reason",
              "cancel_requested", "attempts"),
}
#: Columns added since version 0: table -> (column, its declaration).
ADDED_COLUMNS = {"units": (("input_data", "input_data TEXT"), ("staging_in", "staging_in REAL"),
                           ("staging_out", "staging_out REAL"))}


def damaged(path: Path, exc: BaseException) -> PilotError:
    """The error for a file SQLite cannot read as a database."""
    return PilotError(f"the coordination store {path} is damaged or not an SQLite database ({exc}); "
                      "move it away (a new store is created in its place) or give another coordination_url")


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _marks(con: sqlite3.Connection) -> tuple[int, int]:
    app = con.execute("PRAGMA application_id").fetchone()[0]
    version = con.execute("PRAGMA user_version").fetchone()[0]
    return int(app), int(version)


def _tables(con: sqlite3.Connection) -> dict[str, set[str]]:
    names = [row[0] for row in con.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    return {name: {row[1] for row in con.execute(f"PRAGMA table_info(\"{name}\")")} for name in names}


def _foreign(path: Path, why: str) -> PilotError:
    return PilotError(f"{path} is not a pilot coordination store ({why}); give another coordination_url "
                      "or move the file away")


def _check(path: Path, app: int, version: int) -> bool:
    """True when the file is current; ``PilotError`` when it is not ours or too new."""
    if app not in (0, APPLICATION_ID) or (app == 0 and version != 0):
        raise _foreign(path, f"application id {app}, version {version}")
    if version > SCHEMA_VERSION:
        raise PilotError(f"the coordination store {path} has schema version {version}, newer than this "
                         f"pilot's {SCHEMA_VERSION}: upgrade pilot, or give another coordination_url")
    return app == APPLICATION_ID and version == SCHEMA_VERSION


def _migrate(con: sqlite3.Connection, path: Path) -> None:
    """Inside a write transaction: create or upgrade the schema and mark the file."""
    tables = _tables(con)
    if tables:  # an existing store: every table of ours, with its base columns
        missing = [name for name in BASE_COLUMNS if name not in tables]
        if missing:
            raise _foreign(path, f"tables {sorted(tables)}, none or not all of {sorted(BASE_COLUMNS)}")
        for name, columns in BASE_COLUMNS.items():
            lacking = [c for c in columns if c not in tables[name]]
            if lacking:
                raise _foreign(path, f"table {name!r} lacks columns {lacking}")
        for name, added in ADDED_COLUMNS.items():
            for column, declaration in added:
                if column not in tables[name]:
                    con.execute(f"ALTER TABLE {name} ADD COLUMN {declaration}")
    for statement in _statements(SCHEMA):
        con.execute(statement)
    con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def prepare(con: sqlite3.Connection, path: Path) -> None:
    """Make the open database a current pilot store (see the module docstring).

    ``sqlite3.OperationalError`` for a busy database propagates (the caller retries); a file
    SQLite cannot read raises ``PilotError`` naming it."""
    try:
        if not _check(path, *_marks(con)):  # a file not ours is left as it was
            con.execute("BEGIN IMMEDIATE")
            try:
                if not _check(path, *_marks(con)):  # another process may have done it meanwhile
                    _migrate(con, path)
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            con.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise
        raise damaged(path, exc) from exc
    except sqlite3.DatabaseError as exc:
        raise damaged(path, exc) from exc


def make_private(path: Path) -> None:
    """Create the store's directory (0700) and file (0600; SQLite gives its -wal and -shm files
    the file's mode) unless they exist."""
    if not path.parent.is_dir():
        path.parent.parent.mkdir(parents=True, exist_ok=True)
        path.parent.mkdir(mode=0o700, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
