"""The Redis store records its schema version under its prefix; a newer or foreign one is
refused with what to do (issue 11, item 10)."""

from __future__ import annotations

import pytest
import redis

from pilot.errors import PilotError
from pilot_redis.config import parse_url
from pilot_redis.store import SCHEMA_VERSION, RedisStore


def _client(redis_url: str, redis_password: str) -> tuple[redis.Redis, str]:
    target = parse_url(redis_url)
    client = redis.Redis(host=target.host, port=target.port, db=target.db, password=redis_password)
    return client, f"{target.key_prefix}schema"


def test_a_new_store_records_its_schema_version(redis_url: str, redis_password: str) -> None:
    RedisStore.from_url(redis_url).close()
    client, key = _client(redis_url, redis_password)
    assert int(client.get(key)) == SCHEMA_VERSION
    client.close()


def test_an_older_store_is_marked_and_keeps_its_records(redis_url: str, redis_password: str) -> None:
    store = RedisStore.from_url(redis_url)
    store.put_service("pcs-1", "pcs", {"a": 1})
    store.close()
    client, key = _client(redis_url, redis_password)
    client.delete(key)  # as written before the version was recorded
    store = RedisStore.from_url(redis_url)
    try:
        assert store.get_service("pcs-1") == {"id": "pcs-1", "kind": "pcs", "data": {"a": 1}}
    finally:
        store.close()
    assert int(client.get(key)) == SCHEMA_VERSION
    client.close()


@pytest.mark.parametrize(("value", "match"), [
    (str(SCHEMA_VERSION + 1), "newer than this pilot's.*upgrade pilot-redis"),
    ("not-a-number", "another program"),
])
def test_a_newer_or_foreign_store_is_refused(redis_url: str, redis_password: str, value: str, match: str) -> None:
    client, key = _client(redis_url, redis_password)
    client.set(key, value)
    client.close()
    with pytest.raises(PilotError, match=match) as caught:
        RedisStore.from_url(redis_url)
    assert redis_password not in str(caught.value)
