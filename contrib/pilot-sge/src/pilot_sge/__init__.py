"""pilot-sge: pilots on Grid Engine (Son of Grid Engine, Open Grid Scheduler, Debian's gridengine).

Registered through the entry point group ``pilot`` (name ``sge``); ``sge://localhost`` then
submits pilots with this host's ``qsub``. Written against the public plugin API only. Importing
this module does no work.
"""

from __future__ import annotations

from pilot.plugin import hookimpl
from pilot.plugin.types import ResourceAdaptorRecord
from pilot_sge.adaptor import SgeAdaptor

__all__ = ["SgeAdaptor", "pilot_resource_adaptors"]


@hookimpl
def pilot_resource_adaptors() -> list[ResourceAdaptorRecord]:
    """The ``sge`` scheme."""
    return [ResourceAdaptorRecord(name="sge", schemes=("sge",), factory=SgeAdaptor)]
