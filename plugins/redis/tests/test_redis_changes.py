"""``wait_for_change`` on the real server: several waiters of one store at once, and a
subscription the server drops (``pilot_redis.changes``)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest
import redis

from pilot.errors import PilotError
from pilot.testing.records import unit_record
from pilot_redis.store import RedisStore


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    opened = RedisStore.from_url(redis_url)
    yield opened
    opened.close()


def _wait_in_thread(store: RedisStore, results: list[int], ready: threading.Barrier) -> threading.Thread:
    def run() -> None:
        before = store.wait_for_change(None, 0)
        ready.wait(30)
        results.append(store.wait_for_change(before, 60) - before)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_one_write_wakes_every_waiter_of_a_store(store: RedisStore, redis_url: str) -> None:
    """Threads waiting at once on one store object each get a subscription; one write by
    another client wakes them all."""
    results: list[int] = []
    ready = threading.Barrier(4)
    threads = [_wait_in_thread(store, results, ready) for _ in range(3)]
    ready.wait(30)
    other = RedisStore.from_url(redis_url)
    try:
        other.insert_units([unit_record("cu-1")])
    finally:
        other.close()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a waiter slept through the write"
    assert results == [1, 1, 1]


def test_a_dropped_subscription_fails_once_then_waits_again(store: RedisStore, redis_server: dict[str, str]) -> None:
    """When the server drops the subscribed connection, the next wait raises ``PilotError`` or
    returns; the one after subscribes anew and wakes on a write."""
    marker = store.wait_for_change(None, 0)
    assert store.wait_for_change(marker, 0.01) == marker  # subscribes
    [pubsub] = store._changes._idle
    host, port = pubsub.connection._sock.getsockname()[:2]  # type: ignore[attr-defined]
    admin = redis.Redis(host=redis_server["host"], port=int(redis_server["port"]), password=redis_server["password"])
    try:
        assert admin.client_kill_filter(addr=f"{host}:{port}") == 1
    finally:
        admin.close()
    with contextlib.suppress(PilotError):  # the drop shows now (a PilotError) or not at all
        assert store.wait_for_change(marker, 0.5) == marker
    results: list[int] = []
    ready = threading.Barrier(2)
    thread = _wait_in_thread(store, results, ready)
    ready.wait(30)
    store.put_service("pcs-1", "pcs", {})
    thread.join(30)
    assert results == [1]
