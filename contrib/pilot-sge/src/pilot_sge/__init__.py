"""pilot-sge: pilots on Grid Engine through this host's ``qsub`` (``sge://localhost``), on the
public plugin API only. Entry point group ``pilot``, name ``sge``. Importing it does no work."""

from __future__ import annotations

from pilot.plugin import hookimpl
from pilot.plugin.types import ResourceAdaptorRecord
from pilot_sge.adaptor import SgeAdaptor

__all__ = ["SgeAdaptor", "pilot_resource_adaptors"]


@hookimpl
def pilot_resource_adaptors() -> list[ResourceAdaptorRecord]:
    """The ``sge`` scheme."""
    return [ResourceAdaptorRecord(name="sge", schemes=("sge",), factory=SgeAdaptor)]
