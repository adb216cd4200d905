"""pilot-globus: PilotData on Globus collections (``globus://<collection-uuid>/<path>``).

Importing this module imports nothing heavy: globus-sdk is loaded when the first backend is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pilot.errors import PilotError
from pilot.plugin import hookimpl
from pilot.plugin.types import DataBackend, DataBackendRecord


def _backend() -> DataBackend:
    from pilot_globus.backend import GlobusBackend

    return GlobusBackend()


@hookimpl
def pilot_data_backends() -> list[DataBackendRecord]:
    """Register the Globus backend for ``globus://``."""
    return [DataBackendRecord(name="globus", schemes=("globus",), factory=_backend)]


def check_site_section(table: Mapping[str, Any], sources: Sequence[str]) -> list[str]:
    """What is wrong with a ``[globus]`` table of the site configuration (for ``pilot config
    check``): unknown keys, bad UUIDs, a credentials file missing or readable by others."""
    from pilot_globus.config import settings_from

    try:
        settings_from(table, tuple(sources), {})
    except PilotError as exc:
        return [str(exc)]
    return []
