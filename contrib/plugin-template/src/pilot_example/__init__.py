"""pilot-example: the ``example://`` resource adaptor for pilot.

The entry point (group ``pilot``, name ``example``) names this module; pilot-core registers it
as a plugin and finds its hook implementations by their ``pilot_`` names.
"""

from __future__ import annotations

from pilot.plugin import hookimpl
from pilot.plugin.types import ResourceAdaptorRecord
from pilot_example.adaptor import ExampleAdaptor

__all__ = ["ExampleAdaptor", "pilot_resource_adaptors"]


@hookimpl
def pilot_resource_adaptors() -> list[ResourceAdaptorRecord]:
    """Register ``ExampleAdaptor`` for ``example://`` service URLs."""
    return [ResourceAdaptorRecord(name="example", schemes=("example",), factory=ExampleAdaptor)]
