"""pilot-globus: PilotData on Globus collections (``globus://<collection-uuid>/<path>``).

Importing this module imports nothing heavy: globus-sdk is loaded when the first backend is built.
"""

from __future__ import annotations

from pilot.plugin import hookimpl
from pilot.plugin.types import DataBackend, DataBackendRecord


def _backend() -> DataBackend:
    from pilot_globus.backend import GlobusBackend

    return GlobusBackend()


@hookimpl
def pilot_data_backends() -> list[DataBackendRecord]:
    """Register the Globus backend for ``globus://``."""
    return [DataBackendRecord(name="globus", schemes=("globus",), factory=_backend)]
