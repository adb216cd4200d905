"""Fixtures: the FAKE Globus services of ``pilot_globus.testing`` (Globus cannot be reached from
the test machines), two collections posing as remote ones, and the environment that points
globus-sdk and the site configuration at them. No test here talks to the real Globus."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pilot_globus.testing import FakeGlobus

from globus_helpers import Site, write_site


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeGlobus]:
    with FakeGlobus(tmp_path / "fake-globus") as services:
        yield services


@pytest.fixture
def site(fake: FakeGlobus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    """Two collections, a confidential client in the environment (what an unattended agent
    uses), and the site configuration naming the collections ``a`` and ``b``."""
    a_root, b_root = tmp_path / "collection-a", tmp_path / "collection-b"
    a_root.mkdir()
    b_root.mkdir()
    a, b = fake.add_collection(a_root, display_name="a"), fake.add_collection(b_root, display_name="b")
    for key, value in fake.environ().items():
        monkeypatch.setenv(key, value)
    client_id, secret = fake.register_confidential_client()
    monkeypatch.setenv("PILOT_GLOBUS_CLIENT_ID", client_id)
    monkeypatch.setenv("PILOT_GLOBUS_CLIENT_SECRET", secret)
    token_dir = tmp_path / "tokens"
    monkeypatch.setenv("PILOT_GLOBUS_TOKEN_DIR", str(token_dir))
    config = write_site(tmp_path / "site.toml", {"a": a, "b": b})
    monkeypatch.setenv("PILOT_SITE_CONFIG", str(config))
    return Site(fake, a, b, a_root, b_root, config, token_dir)
