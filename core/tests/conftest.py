"""Every core test runs with its own embedded store and work directory (``pilot_env``)."""

from __future__ import annotations

import pytest

from pilot.testing.fixtures import PilotEnv


@pytest.fixture(autouse=True)
def _isolated(pilot_env: PilotEnv) -> PilotEnv:
    return pilot_env
