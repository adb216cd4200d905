"""Fixtures of pilot-ssh's tests: the real sshd of ``tests/infra/start-sshd.sh`` (127.0.0.1:2222,
user ``ciuser``), a Python that user can run with pilot-core, and a directory (store, sandboxes)
that both the test (root) and the remote user reach. Without the sshd, or without root, the
tests that need them skip with the reason; under ``CI=true`` they fail.

The remote user cannot run this venv's Python (it lives under ``/root``), so ``remote_python``
builds what a site admin would install: a venv of the system's Python 3.11+ holding pilot-core,
pilot-redis and their dependencies, copied from this environment (no network needed).
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from ssh_fixtures import SSHEnv, build_remote_python

from pilot.lifecycle import LIVE_PILOT_STATES, cancel_pilot
from pilot.session import default_session
from pilot.testing.fixtures import PilotEnv
from pilot.testing.services import redis_options, service_missing, sshd_options


@pytest.fixture(scope="session")
def sshd() -> dict[str, str]:
    """How to reach the test sshd (``known_hosts``, ``identity_file``, ``user``, ``port`` ...)."""
    options = sshd_options()
    if os.geteuid() != 0:
        service_missing("test sshd", "these tests need root (to hand the remote user a store and sandboxes)")
    return options


@pytest.fixture(scope="session")
def remote_python(sshd: dict[str, str]) -> Iterator[str]:
    """A Python with pilot-core that the sshd's user can run."""
    root = Path(tempfile.mkdtemp(prefix="pilot-ssh-python-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield str(build_remote_python(root / "venv"))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _cancel_live_pilots(store_url: str) -> None:
    session = default_session()
    store = session.store(store_url)
    for pilot in store.find_pilots(LIVE_PILOT_STATES):
        try:
            cancel_pilot(session, store, pilot)
        except Exception as exc:  # best effort: the test already has its verdict
            warnings.warn(f"could not cancel pilot {pilot['id']}: {exc}", stacklevel=1)


@pytest.fixture
def ssh_env(pilot_env: PilotEnv, sshd: dict[str, str], remote_python: str,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[SSHEnv]:
    """The test's embedded store and sandboxes in a directory the remote user owns (so the agent
    it runs reaches both), a site configuration naming the remote Python for the test sshd's
    ``ssh://`` URL, and the sshd's known_hosts and key in ``$PILOT_SSH_*``."""
    shared = Path(tempfile.mkdtemp(prefix="pilot-ssh-test-", dir="/tmp"))
    user = pwd.getpwnam(sshd["user"])
    home = shared / "home"
    home.mkdir()
    (home / "store.sqlite").touch()  # the remote user's file: SQLite gives its -wal/-shm the same owner
    for path in (shared, home, home / "store.sqlite"):
        os.chown(path, user.pw_uid, user.pw_gid)
    shared.chmod(0o755)
    site_config = shared / "resources.toml"
    url = f"ssh://{sshd['user']}@127.0.0.1:{sshd['port']}"
    site_config.write_text(f'[resources.ci-ssh]\nservice_url = "{url}"\npython = "{remote_python}"\n')
    monkeypatch.setenv("PILOT_HOME", str(home))
    monkeypatch.setenv("PILOT_SITE_CONFIG", str(site_config))
    monkeypatch.setenv("PILOT_SSH_KNOWN_HOSTS", sshd["known_hosts"])
    monkeypatch.setenv("PILOT_SSH_IDENTITY", sshd["identity_file"])
    monkeypatch.setenv("PILOT_HEARTBEAT_TIMEOUT", "20")
    env = SSHEnv(sshd, shared, remote_python, site_config)
    yield env
    _cancel_live_pilots(f"sqlite://{home / 'store.sqlite'}")
    shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture
def redis_store_url(sshd: dict[str, str]) -> Iterator[str]:
    """A Redis store URL (with the password) on the test redis-server under a fresh key prefix;
    only that prefix's keys are deleted afterwards. Skips (fails under CI) without the server."""
    import redis

    server = redis_options()
    host, port, password = server["host"], int(server["port"]), server["password"]
    prefix = f"t{uuid.uuid4().hex[:12]}"
    yield f"redis://:{password}@{host}:{port}/0?prefix={prefix}"
    client = redis.Redis(host=host, port=port, password=password)
    keys = list(client.scan_iter(match=f"pilot:{prefix}:*", count=10_000))
    if keys:
        client.delete(*keys)
    client.close()
