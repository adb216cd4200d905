"""pilot: a pilot-job framework, the modern heir of BigJob's Pilot API.

Public names are imported on first use, so ``import pilot`` (and the agent's start) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

version = "0.1.0"
__version__ = version

_PUBLIC = {
    "PilotComputeService": "pilot.compute",
    "PilotCompute": "pilot.compute",
    "ComputeUnit": "pilot.compute",
    "ComputeDataService": "pilot.service",
    "ComputeDataServiceCentral": "pilot.service",  # BigJob's names for ComputeDataService
    "ComputeDataServiceDecentral": "pilot.service",
    "PilotDataService": "pilot.data.objects",
    "PilotData": "pilot.data.objects",
    "DataUnit": "pilot.data.objects",
    "State": "pilot.states",
    "PilotError": "pilot.errors",
    "PilotComputeDescription": "pilot.descriptions",
    "ComputeUnitDescription": "pilot.descriptions",
    "PilotDataDescription": "pilot.descriptions",
    "DataUnitDescription": "pilot.descriptions",
}
__all__ = [
    "ComputeDataService", "ComputeDataServiceCentral", "ComputeDataServiceDecentral", "ComputeUnit",
    "ComputeUnitDescription", "DataUnit", "DataUnitDescription", "PilotCompute", "PilotComputeDescription",
    "PilotComputeService", "PilotData", "PilotDataDescription", "PilotDataService", "PilotError", "State", "version",
]

if TYPE_CHECKING:
    from pilot.compute import ComputeUnit, PilotCompute, PilotComputeService
    from pilot.data.objects import DataUnit, PilotData, PilotDataService
    from pilot.descriptions import (
        ComputeUnitDescription,
        DataUnitDescription,
        PilotComputeDescription,
        PilotDataDescription,
    )
    from pilot.errors import PilotError
    from pilot.service import ComputeDataService, ComputeDataServiceCentral, ComputeDataServiceDecentral
    from pilot.states import State


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'pilot' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
