"""The real sshd of ``tests/infra/start-sshd.sh`` on 127.0.0.1:2222: skip without it (fail under
``CI=true``, where ``tests/infra/services.sh`` must have started it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilot.testing.services import SSHD_DIR as _SSHD_DIR
from pilot.testing.services import SSHD_PORT, sshd_options, sshd_problem

SSHD_DIR = Path(_SSHD_DIR)
__all__ = ["SSHD_DIR", "SSHD_PORT", "sshd", "sshd_problem"]


@pytest.fixture(scope="session")
def sshd() -> dict[str, str]:
    """Options reaching the test sshd: ``known_hosts``, ``identity_file``, plus ``user``/``port``."""
    return sshd_options()
