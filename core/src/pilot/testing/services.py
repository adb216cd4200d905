"""The rule for tests that need a real service, and the test sshd of ``tests/infra``.

A test whose service is missing is skipped with the reason, so runs on a laptop without root
pass; under ``CI=true`` it fails instead, because there ``tests/infra/services.sh`` must have
started every service.
"""

from __future__ import annotations

import os
import socket

import pytest

SSHD_DIR = os.environ.get("SSHD_DIR", "/tmp/ci-sshd")  # noqa: S108 - where tests/infra/start-sshd.sh puts it
SSHD_PORT = int(os.environ.get("SSHD_PORT", "2222"))


def in_ci() -> bool:
    """True when missing services must fail the run (``CI=true``)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_missing(name: str, problem: str) -> None:
    """Skip (or, under ``CI=true``, fail) the calling test because service ``name`` is unusable."""
    message = f"{name} unavailable: {problem} (start it with: bash tests/infra/services.sh start)"
    if in_ci():
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


def sshd_problem() -> str | None:
    """Why the key-only test sshd cannot be used, or None."""
    for name in ("client_key", "known_hosts"):
        if not os.path.exists(os.path.join(SSHD_DIR, name)):
            return f"{SSHD_DIR}/{name} missing"
    try:
        socket.create_connection(("127.0.0.1", SSHD_PORT), timeout=2).close()
    except OSError as exc:
        return f"nothing listens on 127.0.0.1:{SSHD_PORT} ({exc})"
    return None


def sshd_options() -> dict[str, str]:
    """How to reach the test sshd (skips, or fails under CI, when it is not running): ``url``,
    ``known_hosts``, ``identity_file``, ``user``, ``port`` and ``home`` (the user's home there)."""
    problem = sshd_problem()
    if problem:
        service_missing("test sshd", problem)
    user = os.environ.get("SSHD_USER", "ciuser")
    return {"url": f"sftp://{user}@127.0.0.1:{SSHD_PORT}", "known_hosts": os.path.join(SSHD_DIR, "known_hosts"),
            "identity_file": os.path.join(SSHD_DIR, "client_key"), "user": user, "port": str(SSHD_PORT),
            "home": "/root" if user == "root" else f"/home/{user}"}
