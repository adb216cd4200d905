"""pilot-ssh: pilots on hosts reached over SSH (``ssh://[user@]host[:port]``), BigJob's ``ssh://``
adaptor, on asyncssh.

Importing this module (every agent does, through the entry point) imports nothing heavy:
asyncssh is loaded when the first adaptor is built.
"""

from __future__ import annotations

from pilot.plugin import hookimpl
from pilot.plugin.types import ResourceAdaptor, ResourceAdaptorRecord


def _adaptor(service_url: str) -> ResourceAdaptor:
    from pilot_ssh.adaptor import SSHAdaptor

    return SSHAdaptor(service_url)


@hookimpl
def pilot_resource_adaptors() -> list[ResourceAdaptorRecord]:
    """Register the SSH adaptor for ``ssh://``."""
    return [ResourceAdaptorRecord(name="ssh", schemes=("ssh",), factory=_adaptor)]
