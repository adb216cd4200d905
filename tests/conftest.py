"""Shared fixtures of the cross-package tests: real services (SLURM now; sshd and redis reuse
``require_service``) and the rule for when one is missing.

A test that needs a service the machine does not have is skipped with the reason, so developer
runs without root still pass; under ``CI=true`` (set by ``.ci/run``) it fails instead, because
there ``tests/infra/services.sh`` must have started every service.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator

import pytest

from pilot.testing.services import redis_options, service_missing, sshd_options

SLURM_NODES = ("n1", "n2", "n3")  # tests/infra/services.sh: SLURM_NODES=3 SLURM_CPUS=4


@pytest.fixture(scope="session")
def require_service() -> Callable[[str, str], None]:
    """``require_service(name, problem)``: skip, or fail under ``CI=true``; for service fixtures."""
    return service_missing


def _slurm_problem() -> str | None:
    """Why the three-node test cluster cannot be used, or None when it can."""
    if shutil.which("sinfo") is None:
        return "sinfo not found on PATH"
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True,
                             timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    if out.returncode != 0:
        return f"sinfo failed: {(out.stderr or out.stdout).strip()}"
    states = dict(line.split()[:2] for line in out.stdout.splitlines() if len(line.split()) >= 2)
    usable = {"idle", "mix", "alloc", "comp", "plnd"}  # plnd: held for a queued job, still up
    # sinfo's suffixes: "-" planned by backfill for a queued job (up and in use: tests running
    # beside this one), "*" not responding, "~" "#" power, "$" maintenance, "@" reboot pending
    down = [n for n in SLURM_NODES if states.get(n, "absent").rstrip("-*~#$@") not in usable]
    if down:
        return "nodes not up: " + ", ".join(f"{n} ({states.get(n, 'absent')})" for n in down)
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> tuple[str, ...]:
    """The node names of the three-node test cluster; skips (fails under CI) when it is down."""
    problem = _slurm_problem()
    if problem:
        service_missing("SLURM test cluster", problem)
    return SLURM_NODES


@pytest.fixture(scope="session")
def redis_server() -> dict[str, str]:
    """The test redis-server (``PILOT_TEST_REDIS_*``, tests/infra/start-redis.sh): ``host``,
    ``port``, ``password``; skips (fails under CI) when it is not running."""
    return redis_options()


@pytest.fixture(scope="session")
def redis_password(redis_server: dict[str, str]) -> str:
    """The password of the test redis-server."""
    return redis_server["password"]


@pytest.fixture
def redis_store_url(redis_server: dict[str, str]) -> Iterator[str]:
    """A Redis store URL (with the password) under a fresh key prefix, so tests share the server
    in parallel; only that prefix's keys are deleted afterwards."""
    import uuid

    import redis

    prefix = f"t{uuid.uuid4().hex[:12]}"
    host, port, password = redis_server["host"], int(redis_server["port"]), redis_server["password"]
    yield f"redis://:{password}@{host}:{port}/0?prefix={prefix}"
    client = redis.Redis(host=host, port=port, password=password)
    keys = list(client.scan_iter(match=f"pilot:{prefix}:*", count=10_000))
    for start in range(0, len(keys), 5000):
        client.delete(*keys[start:start + 5000])
    client.close()


@pytest.fixture(scope="session")
def sshd() -> dict[str, str]:
    """The test sshd: ``url`` (``sftp://ciuser@127.0.0.1:2222``), ``known_hosts``,
    ``identity_file`` and ``home`` (the user's home on the server); skips (fails under CI)."""
    return sshd_options()


@pytest.fixture(autouse=True)
def _private_redis_credentials(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test (and the processes it starts) remembers Redis passwords in a file of its own,
    so no test depends on what another one left in ``~/.config/pilot/redis-passwords``."""
    monkeypatch.setenv("PILOT_REDIS_CREDENTIALS", str(tmp_path_factory.mktemp("creds") / "redis-passwords"))
