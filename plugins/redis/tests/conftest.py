"""Fixtures of pilot-redis's tests: the real redis-server named by ``PILOT_TEST_REDIS_*``
(``pilot.testing.services.redis_options``; this repository's tests/infra/start-redis.sh), and a
fresh key prefix per test, so tests run in parallel on one database and clean up only their own
keys.

Without the server the tests skip with the reason; under ``CI=true`` they fail instead."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from pilot.testing.services import redis_options


@pytest.fixture(scope="session")
def redis_server() -> dict[str, str]:
    """The test server (``PILOT_TEST_REDIS_*``): ``host``, ``port``, ``password``; skips (fails
    under CI) when it is not running."""
    return redis_options()


@pytest.fixture(scope="session")
def redis_password(redis_server: dict[str, str]) -> str:
    """The test server's password."""
    return redis_server["password"]


def drop_prefix(server: dict[str, str], prefix: str) -> None:
    """Delete every key under ``pilot:<prefix>:`` (never anything else)."""
    import redis

    client = redis.Redis(host=server["host"], port=int(server["port"]), password=server["password"])
    keys = list(client.scan_iter(match=f"pilot:{prefix}:*", count=10_000))
    for start in range(0, len(keys), 5000):
        client.delete(*keys[start:start + 5000])
    client.close()


@pytest.fixture
def redis_url(redis_server: dict[str, str]) -> Iterator[str]:
    """A store URL with the password and a fresh key prefix; its keys are removed afterwards."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    yield f"redis://:{redis_server['password']}@{redis_server['host']}:{redis_server['port']}/0?prefix={prefix}"
    drop_prefix(redis_server, prefix)


@pytest.fixture(autouse=True)
def _private_redis_credentials(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test (and the processes it starts) remembers Redis passwords in a file of its own,
    so no test depends on what another one left in ``~/.config/pilot/redis-passwords``."""
    monkeypatch.setenv("PILOT_REDIS_CREDENTIALS", str(tmp_path_factory.mktemp("creds") / "redis-passwords"))
