"""The SQLite store: the conformance suite, plus what only SQLite does (locks, file URLs)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from pilot import urls
from pilot.errors import PilotError
from pilot.session import Session
from pilot.store.sqlite import SQLiteStore
from pilot.testing.store_conformance import StoreConformance, unit_record


class TestSQLiteConformance(StoreConformance):
    """The shared store conformance suite against ``sqlite:///<tmp>/store.sqlite``."""

    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite://{tmp_path / 'conformance' / 'store.sqlite'}"


def _hold_write_lock(path: Path, locked: threading.Event, seconds: float) -> threading.Thread:
    """Hold SQLite's write lock on ``path`` from another connection for ``seconds``, having
    written a service row ``held`` inside that transaction."""

    def hold() -> None:
        con = sqlite3.connect(path, isolation_level=None)
        try:
            con.execute("BEGIN EXCLUSIVE")
            con.execute("INSERT INTO services (id, kind, data) VALUES ('held', 'pcs', '{}')")
            locked.set()
            threading.Event().wait(seconds)
            con.execute("COMMIT")
        finally:
            con.close()

    thread = threading.Thread(target=hold)
    thread.start()
    return thread


@pytest.mark.parametrize("busy_timeout_ms", [30000, 0], ids=["sqlite-busy-timeout", "store-retries"])
def test_write_succeeds_after_a_lock_is_released(tmp_path: Path, busy_timeout_ms: int) -> None:
    """A write that meets a database locked by another connection waits (SQLite's busy timeout)
    or retries (the store's own backoff, when SQLite gives up at once) and then succeeds."""
    store = SQLiteStore(tmp_path / "store.sqlite")
    try:
        store._con().execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        locked = threading.Event()
        holder = _hold_write_lock(store.path, locked, 0.3)
        try:
            assert locked.wait(10)
            # WAL: readers are not blocked by the writer, and do not see its uncommitted row.
            assert store.get_service("held") is None
            store.put_service("mine", "cds", {"n": 1})
            store.insert_units([unit_record("cu-1")])
        finally:
            holder.join()
        assert store.get_service("held") is not None
        assert store.get_service("mine") == {"id": "mine", "kind": "cds", "data": {"n": 1}}
        assert [u["id"] for u in store.get_units(["cu-1"])] == ["cu-1"]
    finally:
        store.close()


@pytest.mark.parametrize("url", [
    "sqlite://relative/store.sqlite",
    "sqlite://",
    "sqlite:",
    "redis://localhost/0",
    "file:///tmp/store.sqlite",
])
def test_bad_url_raises_pilot_error(url: str) -> None:
    """A URL that is not ``sqlite:///absolute/path`` is refused with the expected form."""
    with pytest.raises(PilotError, match="sqlite:///absolute/path") as info:
        SQLiteStore.from_url(url)
    assert info.value.key == "coordination_url"


def test_unknown_store_scheme_raises_pilot_error() -> None:
    """A coordination URL whose scheme no plugin serves names the scheme and what is installed."""
    session = Session()
    try:
        with pytest.raises(PilotError, match=r"'nosuchstore'.*sqlite") as info:
            session.store("nosuchstore://host/0")
        assert info.value.key == "coordination_url"
    finally:
        session.close()


def test_unusable_path_raises_pilot_error(tmp_path: Path) -> None:
    """A store path that cannot be a database file raises PilotError, not an OS error."""
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(PilotError, match="a-file"):
        SQLiteStore.from_url(f"sqlite://{tmp_path / 'a-file' / 'store.sqlite'}")
    (tmp_path / "a-dir").mkdir()
    with pytest.raises(PilotError, match="a-dir"):
        SQLiteStore.from_url(f"sqlite://{tmp_path / 'a-dir'}")


def test_path_with_special_characters_reconnects_by_url(tmp_path: Path) -> None:
    """A store in a directory whose name holds a space, '%' and '#' keeps working through its
    URL and through object URLs made from it."""
    odd = tmp_path / "my data #1 100%41"
    store = SQLiteStore(odd / "store.sqlite")
    try:
        store.insert_units([unit_record("cu-1")])
        unit_url = urls.make(store.url, "unit", "cu-1")
        parsed = urls.parse(unit_url, "unit")
        assert parsed.id == "cu-1"
        again = SQLiteStore.from_url(parsed.store_url)
        try:
            assert again.path == store.path
            assert [u["id"] for u in again.get_units(["cu-1"])] == ["cu-1"]
        finally:
            again.close()
    finally:
        store.close()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("my")) == ["my data #1 100%41"]


def test_store_url_round_trips(tmp_path: Path) -> None:
    """A store's ``url`` opens the same file again, through a session as through the class."""
    url = f"sqlite://{tmp_path / 'x' / 'store.sqlite'}"
    session = Session()
    try:
        store = session.store(url)
        assert store.url == url
        assert session.store(store.url) is store
        store.put_service("pcs-1", "pcs", {})
    finally:
        session.close()
    again = SQLiteStore.from_url(url)
    try:
        assert again.get_service("pcs-1") is not None
    finally:
        again.close()


def test_default_store_under_a_home_with_special_characters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded default store lives in PILOT_HOME, whatever characters its path holds."""
    home = tmp_path / "home #1"
    monkeypatch.setenv("PILOT_HOME", str(home))
    session = Session()
    try:
        store = session.store()
        assert store.path == home / "store.sqlite"
    finally:
        session.close()


def test_closing_a_store_under_a_busy_thread_stops_it_cleanly(tmp_path: Path) -> None:
    """Closing a store while another thread uses it (a service's placement thread, when its
    session ends) makes that thread's next call raise StoreClosed instead of crashing SQLite."""
    import threading

    from pilot.errors import StoreClosed
    from pilot.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "busy.sqlite")
    errors: list[BaseException] = []
    started = threading.Event()

    def hammer() -> None:
        try:
            while True:
                store.children("cds-x")
                started.set()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=hammer)
    thread.start()
    started.wait(10)
    store.close()
    thread.join(10)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], StoreClosed)


def test_every_claim_statement_finds_its_units_through_an_index_not_the_whole_queue(tmp_path: Path) -> None:
    """Claims stay as fast with a million queued units as with ten: none of the statements a
    claim runs scans the queue (at a million units, a claim that did took 50 ms instead of 1)."""
    store = SQLiteStore(tmp_path / "store.sqlite")
    store.insert_units([unit_record(f"cu-{n:05d}") for n in range(500)])
    con = store._con()
    statements: list[str] = []
    con.set_trace_callback(statements.append)
    try:
        claimed = store.claim_units("pilot-1", 32, ["cds-1"], 1)
    finally:
        con.set_trace_callback(None)
    assert len(claimed) == 32
    queries = [s for s in statements if s.startswith(("SELECT", "UPDATE"))]
    assert any(s.startswith("UPDATE units SET pilot_id") for s in queries)
    for sql in queries:
        plan = " | ".join(row[3] for row in con.execute(f"EXPLAIN QUERY PLAN {sql}"))
        assert "SCAN units" not in plan, (sql[:120], plan)
        if sql.startswith("UPDATE units SET pilot_id"):  # by seq (the rowid), not via pilot_id's index
            assert "INTEGER PRIMARY KEY" in plan, (sql[:120], plan)
