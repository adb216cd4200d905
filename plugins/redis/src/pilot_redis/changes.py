"""``wait_for_change`` on Redis: block on the store's change channel instead of polling.

Every write that changes units, pilots, services or links increments ``<prefix>changes`` and
publishes the new count on the channel of the same name, in the same script or MULTI/EXEC as
the write (``pilot_redis.scripts``), so it costs no round trip of its own. A waiter subscribes
first and reads the count only once the server has confirmed the subscription: a change before
that read shows in the count (the wait returns at once), a change after it is published to it.
Pub/sub channels span a server's databases, so stores with one prefix in two databases wake
each other's waiters (early returns, which the protocol allows).

Subscribed connections are pooled per store (one per thread waiting at once). A connection that
fails is dropped; the failure raises ``PilotError`` at once, without the retries of other calls
(``wait()`` then polls for that round; its next look at the store rides the outage out).
"""

from __future__ import annotations

import math
import threading
import time

import redis
from redis.client import PubSub

#: Longest wait for the server to confirm a subscription.
SUBSCRIBE_SECONDS = 10.0
#: Most messages left from before a wait that it reads first (any more: an early return).
DRAIN = 1000


class ChangeWaiter:
    """Waits for changes of one store (key and channel ``changes``)."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._client = client
        self.key = key
        self._idle: list[PubSub] = []
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Close the idle subscriptions (one in use is closed when its waiter returns)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for pubsub in idle:
            pubsub.close()

    def _subscribed(self) -> PubSub:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        pubsub: PubSub = self._client.pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(self.key)
            deadline = time.monotonic() + SUBSCRIBE_SECONDS
            while (message := pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))) is None \
                    or message["type"] != "subscribe":
                if time.monotonic() >= deadline:
                    raise redis.TimeoutError(f"no confirmation of SUBSCRIBE {self.key} in {SUBSCRIBE_SECONDS:g} s")
        except BaseException:
            pubsub.close()
            raise
        return pubsub

    def _count(self) -> int:
        raw = self._client.get(self.key)
        return int(raw) if raw is not None else 0

    def wait(self, since: int | None, timeout: float) -> int:
        """The change count; with ``since`` given, once it differs from ``since`` or after
        ``timeout`` seconds. Raises ``redis.RedisError`` as redis-py does."""
        if since is None:  # the next wait compares with a count read once it is subscribed
            return self._count()
        pubsub = self._subscribed()
        try:
            for _ in range(DRAIN):  # published before this call: the count read next covers them
                if pubsub.get_message(timeout=0.0) is None:
                    break
            current = self._count()
            if current != since or not timeout > 0:
                self._release(pubsub)
                return current
            deadline = time.monotonic() + (timeout if math.isfinite(timeout) else 1e9)
            while (left := deadline - time.monotonic()) > 0:
                message = pubsub.get_message(timeout=left)
                if message is not None and message["type"] == "message":
                    break
            current = self._count()
        except BaseException:
            pubsub.close()
            raise
        self._release(pubsub)
        return current

    def _release(self, pubsub: PubSub) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(pubsub)
                return
        pubsub.close()
