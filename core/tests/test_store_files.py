"""The SQLite store and the files it meets: a schema version, migration of an older store,
damaged and foreign files refused with ``PilotError`` naming them, private modes, and no store
created by reconnecting with a mistyped URL (issue 11, items 8, 10 and 12)."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from pilot import urls
from pilot.compute import ComputeUnit
from pilot.errors import PilotError
from pilot.session import Session
from pilot.store.sqlite import SQLiteStore
from pilot.store.sqlite_schema import APPLICATION_ID, SCHEMA_VERSION
from pilot.testing.store_conformance import unit_record

# The schema as the first release created it: units had no input_data column and no queue indexes.
_V0 = """
CREATE TABLE services (id TEXT PRIMARY KEY, kind TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE links (seq INTEGER PRIMARY KEY AUTOINCREMENT, parent TEXT NOT NULL,
    child TEXT NOT NULL, UNIQUE(parent, child));
CREATE TABLE pilots (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
    service_id TEXT, state TEXT NOT NULL, description TEXT, sandbox TEXT, scheme TEXT, native_id TEXT,
    slots INTEGER, hosts TEXT, datacenter TEXT, machine TEXT, submitted REAL, started REAL,
    finished REAL, heartbeat REAL, heartbeat_timeout REAL, reason TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0, agent_host TEXT, agent_pid INTEGER);
CREATE INDEX pilots_service ON pilots(service_id);
CREATE TABLE units (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
    cds_id TEXT, pilot_id TEXT, state TEXT NOT NULL, claimed INTEGER NOT NULL DEFAULT 0,
    slots INTEGER NOT NULL DEFAULT 1, description TEXT, datacenter TEXT, machine TEXT,
    exit_code INTEGER, host TEXT, sandbox TEXT, submitted REAL, started REAL, finished REAL,
    reason TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0);
CREATE INDEX units_pilot ON units(pilot_id, state, claimed);
CREATE INDEX units_cds ON units(cds_id, state, pilot_id);
"""


def _raw(path: Path, script: str) -> None:
    con = sqlite3.connect(path)
    con.executescript(script)
    con.close()


def _marks(path: Path) -> tuple[int, int]:
    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA application_id").fetchone()[0], con.execute("PRAGMA user_version").fetchone()[0]
    finally:
        con.close()


def _real_store(path: Path, units: int = 3000) -> None:
    store = SQLiteStore(path)
    store.insert_units([dict(unit_record(f"cu-{n}"), reason="x" * 200) for n in range(units)])
    store.close()
    assert not Path(f"{path}-wal").exists()  # checkpointed on close: the file holds everything


def _use(path: Path) -> None:
    store = SQLiteStore(path)
    try:
        store.find_units()
        store.find_pilots()
    finally:
        store.close()


def test_a_new_store_records_its_schema_version(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "s.sqlite").close()
    assert _marks(tmp_path / "s.sqlite") == (APPLICATION_ID, SCHEMA_VERSION)


def test_an_older_store_is_migrated_and_keeps_its_records(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    _raw(path, _V0 + "INSERT INTO units (id, state) VALUES ('cu-old', 'Done');")
    store = SQLiteStore(path)
    try:
        assert [u["id"] for u in store.get_units(["cu-old"])] == ["cu-old"]
        assert store.get_units(["cu-old"])[0]["input_data"] is None
        store.insert_units([unit_record("cu-new", input_data=["du-1"])])
        assert [u["id"] for u in store.find_units(constrained=True)] == ["cu-new"]
    finally:
        store.close()
    assert _marks(path) == (APPLICATION_ID, SCHEMA_VERSION)


def test_a_newer_store_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    SQLiteStore(path).close()
    _raw(path, f"PRAGMA user_version = {SCHEMA_VERSION + 1};")
    with pytest.raises(PilotError, match=r"new\.sqlite.*newer.*upgrade pilot"):
        SQLiteStore(path)


def test_garbage_bytes_are_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.sqlite"
    path.write_bytes(os.urandom(3000))
    with pytest.raises(PilotError, match=r"garbage\.sqlite.*damaged or not an SQLite database"):
        _use(path)
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(5000))  # a header and then garbage
    with pytest.raises(PilotError, match=r"garbage\.sqlite"):
        _use(path)


def test_a_truncated_store_is_refused_naming_the_file(tmp_path: Path) -> None:
    real = tmp_path / "real.sqlite"
    _real_store(real)
    cut = tmp_path / "cut.sqlite"
    data = real.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(PilotError, match=r"cut\.sqlite"):
        _use(cut)


def test_damage_met_after_opening_is_a_pilot_error(tmp_path: Path) -> None:
    """A page damaged behind the store's back: reads end in PilotError naming the file."""
    path = tmp_path / "hurt.sqlite"
    _real_store(path)
    size = path.stat().st_size
    with path.open("r+b") as f:  # keep page 1 (the schema), overwrite the rest
        f.seek(4096)
        f.write(os.urandom(size - 4096))
    store = SQLiteStore(path)
    try:
        with pytest.raises(PilotError, match=r"hurt\.sqlite"):
            store.find_units()
    finally:
        store.close()


@pytest.mark.parametrize("script", [
    "CREATE TABLE units (id INTEGER PRIMARY KEY, name TEXT, price REAL);",  # a `units` of other columns
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'a');",
    "PRAGMA user_version = 7; CREATE TABLE t (x);",  # another program's own versioning
    "PRAGMA application_id = 1234; CREATE TABLE t (x);",
])
def test_another_programs_database_is_refused_and_left_alone(tmp_path: Path, script: str) -> None:
    path = tmp_path / "other.db"
    _raw(path, script)
    before = path.read_bytes()
    with pytest.raises(PilotError, match=r"other\.db is not a pilot coordination store"):
        SQLiteStore(path)
    assert path.read_bytes() == before


def test_the_store_directory_and_files_are_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home" / ".pilot"
    monkeypatch.setenv("PILOT_HOME", str(home))
    monkeypatch.delenv("PILOT_COORDINATION_URL", raising=False)
    old = os.umask(0o022)
    session = Session()
    try:
        store = session.store()
        store.insert_units([unit_record("cu-1")])
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        for name in ("store.sqlite", "store.sqlite-wal", "store.sqlite-shm"):
            assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name
    finally:
        session.close()
        os.umask(old)


def test_reconnecting_by_a_mistyped_url_creates_nothing(tmp_path: Path) -> None:
    real = tmp_path / "store.sqlite"
    SQLiteStore(real).close()
    for wrong in (tmp_path / "stroe.sqlite", tmp_path / "typo" / "deeper" / "store.sqlite"):
        url = urls.make(f"sqlite://{wrong}", "unit", "cu-1")
        session = Session()
        try:
            with pytest.raises(PilotError, match="no coordination store at"):
                ComputeUnit(url, session=session)
        finally:
            session.close()
        assert not wrong.exists()
    assert not (tmp_path / "typo").exists()


def test_a_new_coordination_url_still_creates_its_store(tmp_path: Path) -> None:
    session = Session()
    try:
        store = session.store(f"sqlite://{tmp_path / 'fresh' / 'store.sqlite'}")
        assert store.path.is_file()
    finally:
        session.close()
