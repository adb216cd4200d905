"""The Redis store passes the store conformance suite every store must pass, against the real
redis-server (each test under its own key prefix)."""

from __future__ import annotations

import pytest

from pilot.testing.store_conformance import StoreConformance


class TestRedisStore(StoreConformance):
    """The shared suite, opened through the plugin manager like the core does."""

    @pytest.fixture
    def store_url(self, redis_url: str) -> str:
        return redis_url
