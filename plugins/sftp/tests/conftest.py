"""The real test sshd named by ``PILOT_TEST_SSHD_*`` (``pilot.testing.services``; this
repository's tests/infra/start-sshd.sh): skip without it (fail under ``CI=true``)."""

from __future__ import annotations

import pytest

from pilot.testing.services import sshd_options


@pytest.fixture(scope="session")
def sshd() -> dict[str, str]:
    """Options reaching the test sshd: ``known_hosts``, ``identity_file``, plus ``user``/``port``."""
    return sshd_options()
