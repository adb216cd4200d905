"""Real services for tests, found through environment variables, and the rule for a missing one.

A test whose service is missing is skipped with the reason, so runs on a laptop without the
service pass; under ``CI=true`` it fails instead, because there the CI must have started it.
Where a service listens is never assumed: it comes from ``PILOT_TEST_*`` variables that the
project running the tests sets (from a file of its own, for instance):

- ``PILOT_TEST_SSHD_DIR``: a directory holding ``client_key`` (a private key the server accepts)
  and ``known_hosts`` (the server's host key); ``PILOT_TEST_SSHD_PORT`` (on 127.0.0.1);
  ``PILOT_TEST_SSHD_USER``, and optionally ``PILOT_TEST_SSHD_HOME`` (that user's home there).
- ``PILOT_TEST_REDIS_PORT`` (on 127.0.0.1) and ``PILOT_TEST_REDIS_PASSWORD_FILE``.
- ``PILOT_TEST_SERVICES_HINT``: how to start the services, added to every skip message.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

HINT_ENV = "PILOT_TEST_SERVICES_HINT"


def in_ci() -> bool:
    """True when missing services must fail the run (``CI=true``)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_missing(name: str, problem: str) -> None:
    """Skip (or, under ``CI=true``, fail) the calling test because service ``name`` is unusable."""
    hint = os.environ.get(HINT_ENV, "")
    message = f"{name} unavailable: {problem}" + (f" ({hint})" if hint else "")
    if in_ci():
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


def setting(name: str, service: str) -> str:
    """The value of environment variable ``name``, which locates ``service``; skips (or fails
    under CI) when it is not set."""
    value = os.environ.get(name, "").strip()
    if not value:
        service_missing(service, f"{name} is not set")
    return value


def _port(name: str, service: str) -> int:
    raw = setting(name, service)
    if not raw.isdigit():
        service_missing(service, f"{name} is not a port number: {raw!r}")
    return int(raw)


def _listening(port: int) -> str | None:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError as exc:
        return f"nothing listens on 127.0.0.1:{port} ({exc})"
    return None


def sshd_options() -> dict[str, str]:
    """How to reach the test sshd (skips, or fails under CI, when it is unusable): ``url``,
    ``known_hosts``, ``identity_file``, ``user``, ``port`` and ``home`` (the user's home there)."""
    directory = Path(setting("PILOT_TEST_SSHD_DIR", "test sshd"))
    port = _port("PILOT_TEST_SSHD_PORT", "test sshd")
    user = setting("PILOT_TEST_SSHD_USER", "test sshd")
    for name in ("client_key", "known_hosts"):
        if not (directory / name).exists():
            service_missing("test sshd", f"{directory / name} missing")
    problem = _listening(port)
    if problem:
        service_missing("test sshd", problem)
    home = os.environ.get("PILOT_TEST_SSHD_HOME") or ("/root" if user == "root" else f"/home/{user}")
    return {"url": f"sftp://{user}@127.0.0.1:{port}", "known_hosts": str(directory / "known_hosts"),
            "identity_file": str(directory / "client_key"), "user": user, "port": str(port), "home": home}


def redis_options() -> dict[str, str]:
    """How to reach the test redis-server (skips, or fails under CI, when it is unusable):
    ``host``, ``port``, ``password``; redis-py must be installed."""
    port = _port("PILOT_TEST_REDIS_PORT", "redis-server")
    password_file = Path(setting("PILOT_TEST_REDIS_PASSWORD_FILE", "redis-server"))
    try:
        import redis
    except ImportError:
        service_missing("redis-server", "redis-py is not installed")
    try:
        password = password_file.read_text().strip()
        redis.Redis(host="127.0.0.1", port=port, password=password, socket_connect_timeout=2).ping()
    except (OSError, redis.RedisError) as exc:
        service_missing("redis-server", f"127.0.0.1:{port}: {exc}")
    return {"host": "127.0.0.1", "port": str(port), "password": password}
