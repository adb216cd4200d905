"""The repository's own test settings: where the services of ``tests/infra/`` listen.

``tests/infra/test-services.env`` names them; its values go into the environment of every test
run from this checkout (values already set win), so the published kit
(``pilot.testing.services``) finds the services through ``PILOT_TEST_*`` variables alone.
"""

from __future__ import annotations

import os
from pathlib import Path

SERVICES_ENV = Path(__file__).parent / "tests" / "infra" / "test-services.env"


def pytest_configure() -> None:
    """Load ``tests/infra/test-services.env`` into ``os.environ`` (without overriding)."""
    for line in SERVICES_ENV.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            os.environ.setdefault(name.strip(), value.strip().strip("\"'"))
