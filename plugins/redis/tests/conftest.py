"""Fixtures of pilot-redis's tests: the real redis-server of tests/infra/start-redis.sh
(127.0.0.1:6390, password in /tmp/ci-redis/password), and a fresh key prefix per test, so tests
run in parallel on one database and clean up only their own keys.

Without the server the tests skip with the reason; under ``CI=true`` they fail instead."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_HOST = os.environ.get("PILOT_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("PILOT_TEST_REDIS_PORT", "6390"))
PASSWORD_FILE = Path(os.environ.get("PILOT_TEST_REDIS_PASSWORD_FILE", "/tmp/ci-redis/password"))


def _missing(problem: str) -> None:
    message = f"redis-server unavailable: {problem} (start it with: bash tests/infra/start-redis.sh start)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_password() -> str:
    """The test server's password; skips (fails under CI) when the server is not running."""
    import redis

    try:
        password = PASSWORD_FILE.read_text().strip()
    except OSError as exc:
        _missing(f"cannot read {PASSWORD_FILE}: {exc.strerror}")
    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, password=password, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        _missing(f"no answer on {REDIS_HOST}:{REDIS_PORT}: {exc}")
    return password


def drop_prefix(password: str, prefix: str) -> None:
    """Delete every key under ``pilot:<prefix>:`` (never anything else)."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, password=password)
    keys = list(client.scan_iter(match=f"pilot:{prefix}:*", count=10_000))
    for start in range(0, len(keys), 5000):
        client.delete(*keys[start:start + 5000])
    client.close()


@pytest.fixture
def redis_url(redis_password: str) -> Iterator[str]:
    """A store URL with the password and a fresh key prefix; its keys are removed afterwards."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    yield f"redis://:{redis_password}@{REDIS_HOST}:{REDIS_PORT}/0?prefix={prefix}"
    drop_prefix(redis_password, prefix)


@pytest.fixture(autouse=True)
def _private_redis_credentials(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test (and the processes it starts) remembers Redis passwords in a file of its own,
    so no test depends on what another one left in ``~/.config/pilot/redis-passwords``."""
    monkeypatch.setenv("PILOT_REDIS_CREDENTIALS", str(tmp_path_factory.mktemp("creds") / "redis-passwords"))
