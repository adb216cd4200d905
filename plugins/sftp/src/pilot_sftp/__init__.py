"""pilot-sftp: PilotData on SFTP servers (``sftp://user@host:port/path``, also ``ssh://``).

Importing this module (every agent does, through the entry point) imports nothing heavy:
asyncssh is loaded when the first backend is built.
"""

from __future__ import annotations

from pilot.plugin import hookimpl
from pilot.plugin.types import DataBackend, DataBackendRecord


def _backend() -> DataBackend:
    from pilot_sftp.backend import SFTPBackend

    return SFTPBackend()


@hookimpl
def pilot_data_backends() -> list[DataBackendRecord]:
    """Register the SFTP backend for ``sftp://`` and ``ssh://``."""
    return [DataBackendRecord(name="sftp", schemes=("sftp", "ssh"), factory=_backend)]
