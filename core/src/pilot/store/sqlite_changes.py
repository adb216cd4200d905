"""Change markers of the embedded SQLite store (``CoordinationStore.wait_for_change``).

``PRAGMA data_version`` of a connection changes whenever another connection (of any thread or
process) has committed; it is a cheap read (no write lock, no lasting transaction) but misses
the connection's own commits, so a marker also counts the commits of the store object, and
names the connection it was read on (data versions of two connections are not comparable: a
marker read in another thread simply differs). Waiting polls the marker, sleeping 2 ms between
reads, growing to 20 ms: SQLite has no notification across processes.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
import threading
import time
from collections.abc import Callable

FIRST_PAUSE = 0.002
LONGEST_PAUSE = 0.02
_serials = itertools.count(1)


class ChangeMarks:
    """The commits of one store object, and the markers its connections read."""

    def __init__(self) -> None:
        self._commits = 0
        self._lock = threading.Lock()
        self._local = threading.local()

    def committed(self) -> None:
        """Count a commit of this store object (which its own connection's data version misses)."""
        with self._lock:
            self._commits += 1

    def marker(self, con: sqlite3.Connection) -> int:
        """The marker seen through ``con``, this thread's connection."""
        serial: int | None = getattr(self._local, "serial", None)
        if serial is None:
            serial = self._local.serial = next(_serials)
        version = int(con.execute("PRAGMA data_version").fetchone()[0])
        return serial << 128 | (version & (1 << 64) - 1) << 64 | self._commits & (1 << 64) - 1

    @staticmethod
    def wait(read: Callable[[], int], since: int | None, timeout: float) -> int:
        """Read the marker with ``read`` until it differs from ``since`` or ``timeout`` seconds
        have passed; return the last one read."""
        current = read()
        if since is None or current != since or not timeout > 0:
            return current
        deadline = time.monotonic() + (timeout if math.isfinite(timeout) else 1e9)
        pause = FIRST_PAUSE
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(pause, left))
            current = read()
            if current != since:
                return current
            pause = min(pause * 1.5, LONGEST_PAUSE)
        return current
