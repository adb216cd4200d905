"""The default placement policy: affinity labels first, then pilots beside the unit's input data,
then the pilot with most free capacity.

Registered as a plugin through ``pilot_place_unit``; a plugin that answers first replaces it.
"""

from __future__ import annotations

from collections.abc import Sequence

from pilot.plugin import hookimpl
from pilot.plugin.types import PilotView, UnitView


def labels_match(unit: UnitView, pilot: PilotView) -> bool:
    """A unit's labels match a pilot when every label the unit sets is equal on the pilot
    (a datacenter label alone matches any machine in that datacenter)."""
    return ((unit.datacenter is None or unit.datacenter == pilot.datacenter)
            and (unit.machine is None or unit.machine == pilot.machine))


def eligible_pilots(unit: UnitView, pilots: Sequence[PilotView]) -> list[PilotView]:
    """The pilots the unit may go to: those matching its labels while any is alive, else all."""
    if unit.datacenter is None and unit.machine is None:
        return list(pilots)
    matching = [p for p in pilots if labels_match(unit, p)]
    return matching or list(pilots)


def near_data(unit: UnitView, pilots: Sequence[PilotView]) -> list[PilotView]:
    """The pilots co-located with a PilotData holding the unit's input data: same labels (a
    PilotData with only a datacenter label is beside every pilot of that datacenter)."""
    return [p for p in pilots
            if any((dc is None or dc == p.datacenter) and (m is None or m == p.machine) for dc, m in unit.data_labels)]


@hookimpl(trylast=True)
def pilot_place_unit(unit: UnitView, pilots: Sequence[PilotView]) -> str | None:
    """Pick the eligible pilot with most free capacity, or keep the unit queued. A unit with
    input data waits for the pilots beside its data while any is alive."""
    eligible = eligible_pilots(unit, pilots)
    free = [p for p in near_data(unit, eligible) or eligible if p.free >= unit.slots]
    if not free:
        return None
    return max(free, key=lambda p: p.free).id
