"""pilot-redis: the Redis coordination store (``redis://[:password@]host:port/db``).

Registered through the entry point group ``pilot``. Importing this module does no work: the
store module (and redis-py) is imported when a ``redis://`` URL is first opened.
"""

from __future__ import annotations

from pilot.plugin import hookimpl
from pilot.plugin.types import CoordinationStoreRecord
from pilot.store import CoordinationStore


def open_store(url: str) -> CoordinationStore:
    """Open the Redis store at ``url`` (see ``pilot_redis.config`` for the URL form)."""
    from pilot_redis.store import RedisStore

    return RedisStore.from_url(url)


@hookimpl
def pilot_coordination_stores() -> list[CoordinationStoreRecord]:
    """Register the Redis store for ``redis://`` and ``rediss://`` (TLS)."""
    return [CoordinationStoreRecord(name="redis", schemes=("redis", "rediss"), open=open_store)]
