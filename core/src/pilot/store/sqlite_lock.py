"""The writers' turn of the embedded SQLite store: a blocking ``flock`` on ``<store>.lock``,
taken around every write transaction (``SQLiteStore._write``).

SQLite does not queue writers: one that finds the write lock taken sleeps 1, 2, 5 ... up to
100 ms between tries (its busy handler) and starts its transaction anew on each try. With many
processes writing (50 agents on one host), writes met a taken lock most of the time: a median
wait of 30 ms, 0.6 s at the 90th percentile, 4 s at worst, while the lock was free for much of
that time, and every try cost CPU. Waiting in ``flock`` instead, a writer sleeps in the kernel
and is woken as the holder lets go.

- One descriptor per thread (a ``flock`` lock belongs to an open file description, so threads
  of one process exclude each other too), opened on a thread's first write; a process that
  forked opens its own.
- The kernel lets go of a lock whose holder died; a holder that is stopped (``SIGSTOP``) holds
  the other writers until it goes on or ends, as SQLite's lock would (which then failed them
  after a minute).
- Where the file cannot be made (a directory this user cannot write) or the file system has no
  ``flock``, writes go without it: SQLite's lock still keeps them apart.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


class WriterLock:
    """The writers' lock of the store at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".lock")
        self.usable = True
        self._fds: dict[int, int] = {}  # thread ident -> its descriptor
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def _fd(self) -> int | None:
        if not self.usable:
            return None
        if os.getpid() != self._pid:  # a forked child: the parent's descriptors share its locks
            self.close(list(self._fds))
            self._pid = os.getpid()
        ident = threading.get_ident()
        fd = self._fds.get(ident)
        if fd is None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                self.usable = False
                return None
            with self._lock:
                self._fds[ident] = fd
        return fd

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the block (wait for it, blocking)."""
        fd = self._fd()
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # EINTR is retried; a signal handler's exception comes through
            except OSError:  # no flock on this file system
                self.usable = False
                fd = None
        try:
            yield
        finally:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self, idents: Iterable[int]) -> None:
        """Close the descriptors of the threads ``idents``."""
        with self._lock:
            for ident in idents:
                fd = self._fds.pop(ident, None)
                if fd is not None:
                    os.close(fd)
