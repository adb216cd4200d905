"""The fallback agent resources: the slots the pilot asked for, all on this host."""

from __future__ import annotations

import socket
from collections.abc import Mapping

from pilot.plugin import hookimpl
from pilot.plugin.types import AgentResources, NodeSlots


@hookimpl(trylast=True)
def pilot_agent_resources(environ: Mapping[str, str], requested_slots: int) -> AgentResources | None:
    """``requested_slots`` slots on the local host; used when no batch system is recognised."""
    return AgentResources(nodes=(NodeSlots(socket.gethostname(), requested_slots),), source="host")
