"""The SQLite store's writers' lock (``pilot.store.sqlite_lock``): writers of any thread or
process wait for each other in ``flock`` on ``<store>.lock``, and a store whose lock file cannot
be used still writes."""

from __future__ import annotations

import fcntl
import os
import select
import stat
import threading
from pathlib import Path

import pytest

from pilot.store.sqlite import SQLiteStore
from pilot.store.sqlite_lock import WriterLock
from pilot.testing.store_conformance import unit_record


def test_a_write_waits_while_another_writer_holds_the_lock(tmp_path: Path) -> None:
    """A write started while the lock file is locked (as another writer of the store holds it)
    does not commit until that writer lets go, then commits; the lock file is private (0600)."""
    store = SQLiteStore(tmp_path / "store.sqlite")
    try:
        store.insert_units([unit_record("cu-0")])  # makes the lock file
        lock_path = tmp_path / "store.sqlite.lock"
        assert stat.S_IMODE(lock_path.stat().st_mode) == 0o600
        fd = os.open(lock_path, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        done = threading.Event()

        def write() -> None:
            store.insert_units([unit_record("cu-1")])
            done.set()

        writer = threading.Thread(target=write)
        try:
            writer.start()
            assert not done.wait(0.3)  # waiting for its turn
            assert store.get_units(["cu-1"]) == []
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            writer.join(10)
        assert done.is_set()
        assert [u["id"] for u in store.get_units(["cu-0", "cu-1"])] == ["cu-0", "cu-1"]
    finally:
        store.close()


def test_threads_of_one_store_take_turns(tmp_path: Path) -> None:
    """Threads writing through one store object each hold the lock alone: a thread's write waits
    while another thread of the same process holds it."""
    lock = WriterLock(tmp_path / "store.sqlite")
    order: list[str] = []

    def second() -> None:
        with lock.held():
            order.append("second")

    with lock.held():
        order.append("first")
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.3)
        assert thread.is_alive()  # blocked on the first thread's turn
        order.append("first ends")
    thread.join(10)
    assert order == ["first", "first ends", "second"]
    lock.close([threading.get_ident(), thread.ident or 0])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_opens_its_own_descriptor(tmp_path: Path) -> None:
    """A process forked while its parent holds the lock waits for the parent's turn to end (an
    inherited descriptor would share the parent's lock and let both write at once)."""
    lock = WriterLock(tmp_path / "store.sqlite")
    read_end, write_end = os.pipe()
    with lock.held():
        pid = os.fork()
        if pid == 0:  # the child: report once it holds the lock
            try:
                with lock.held():
                    os.write(write_end, b"c")
            finally:
                os._exit(0)
        os.close(write_end)
        assert select.select([read_end], [], [], 0.3)[0] == []  # the child waits
    assert os.read(read_end, 1) == b"c"  # the parent let go: the child got its turn
    os.close(read_end)
    assert os.waitpid(pid, 0)[1] == 0
    lock.close([threading.get_ident()])


def test_a_store_writes_where_the_lock_file_cannot_be_made(tmp_path: Path) -> None:
    """When the lock file cannot be created (here: a directory stands at its path), the store
    writes without it: SQLite's own lock keeps writers apart."""
    (tmp_path / "store.sqlite.lock").mkdir()
    store = SQLiteStore(tmp_path / "store.sqlite")
    try:
        store.insert_units([unit_record("cu-1")])
        store.put_service("cds-1", "cds", {})
        assert [u["id"] for u in store.get_units(["cu-1"])] == ["cu-1"]
        assert store._writers.usable is False
    finally:
        store.close()


def test_a_store_writes_where_the_file_system_has_no_flock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system without ``flock`` (some Lustre mounts; none here, so ``flock`` is patched to
    fail as it does there, with ENOLCK) leaves the store writing without the lock, not failing."""
    import errno

    from pilot.store import sqlite_lock

    def no_flock(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    store = SQLiteStore(tmp_path / "store.sqlite")
    try:
        monkeypatch.setattr(sqlite_lock.fcntl, "flock", no_flock)
        store.insert_units([unit_record("cu-1")])
        store.insert_units([unit_record("cu-2")])
        assert [u["id"] for u in store.get_units(["cu-1", "cu-2"])] == ["cu-1", "cu-2"]
        assert store._writers.usable is False
    finally:
        store.close()
