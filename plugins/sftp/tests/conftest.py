"""The real sshd of ``tests/infra/start-sshd.sh`` on 127.0.0.1:2222: skip without it (fail under
``CI=true``, where ``tests/infra/services.sh`` must have started it)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

SSHD_DIR = Path(os.environ.get("SSHD_DIR", "/tmp/ci-sshd"))
SSHD_PORT = int(os.environ.get("SSHD_PORT", "2222"))


def sshd_problem() -> str | None:
    """Why the test sshd cannot be used, or None."""
    for name in ("client_key", "known_hosts"):
        if not (SSHD_DIR / name).exists():
            return f"{SSHD_DIR / name} missing"
    try:
        socket.create_connection(("127.0.0.1", SSHD_PORT), timeout=2).close()
    except OSError as exc:
        return f"nothing listens on 127.0.0.1:{SSHD_PORT} ({exc})"
    return None


@pytest.fixture(scope="session")
def sshd() -> dict[str, str]:
    """Options reaching the test sshd: ``known_hosts``, ``identity_file``, plus ``user``/``port``."""
    problem = sshd_problem()
    if problem:
        message = f"test sshd unavailable: {problem} (start it with: bash tests/infra/start-sshd.sh)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message)
    return {"known_hosts": str(SSHD_DIR / "known_hosts"), "identity_file": str(SSHD_DIR / "client_key"),
            "user": os.environ.get("SSHD_USER", "ciuser"), "port": str(SSHD_PORT)}
