# mypy: disable-error-code="empty-body"
"""The hook specifications: the contract between the core and every plugin.

A plugin is any module or object with functions named like these hooks and marked with
``pilot.plugin.hookimpl``. Registration hooks return lists of typed records
(``pilot.plugin.types``); the manager rejects two plugins that claim the same scheme or name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pilot.plugin import hookspec
from pilot.plugin.types import (
    AgentResources,
    CoordinationStoreRecord,
    DataBackendRecord,
    LaunchMethodRecord,
    PilotView,
    ResourceAdaptorRecord,
    UnitView,
)
from pilot.states import Kind, State


@hookspec
def pilot_resource_adaptors() -> list[ResourceAdaptorRecord]:
    """Resource adaptors this plugin provides, each for one or more ``service_url`` schemes.

    Called once when the plugin manager loads. Example: the built-in fork adaptor returns
    ``[ResourceAdaptorRecord(name="fork", schemes=("fork", "local"), factory=ForkAdaptor)]``.
    """


@hookspec
def pilot_coordination_stores() -> list[CoordinationStoreRecord]:
    """Coordination stores this plugin provides, each for one or more ``coordination_url``
    schemes. Every store must pass ``pilot.testing.store_conformance``."""


@hookspec
def pilot_data_backends() -> list[DataBackendRecord]:
    """Data backends this plugin provides, each for one or more PilotData ``service_url``
    schemes (``file``, ``sftp`` ...). Every backend must pass
    ``pilot.testing.data_conformance``. Example: the built-in local backend returns
    ``[DataBackendRecord(name="local", schemes=("file",), factory=LocalBackend)]``."""


@hookspec
def pilot_launch_methods() -> list[LaunchMethodRecord]:
    """Launch methods (agent side) this plugin provides: how a unit's command line becomes an
    argv on its slots (``fork``, ``mpirun``, ``srun`` ...)."""


@hookspec(firstresult=True)
def pilot_agent_resources(environ: Mapping[str, str], requested_slots: int) -> AgentResources | None:
    """The slots of the allocation the agent runs in, read from ``environ``.

    Return ``None`` when this plugin does not recognise the environment (say, no
    ``SLURM_JOB_ID``); the first non-``None`` answer wins. The built-in fallback offers
    ``requested_slots`` slots on the local host.
    """


@hookspec(firstresult=True)
def pilot_place_unit(unit: UnitView, pilots: Sequence[PilotView]) -> str | None:
    """The placement policy: the id of the pilot that should run ``unit``, or ``None`` to
    leave it queued (late binding). ``pilots`` holds the live pilots of the service that are
    large enough for the unit, with their free capacity. The first non-``None`` answer wins;
    the built-in policy runs last."""


@hookspec
def pilot_state_changed(kind: Kind, entity_id: str, old: State, new: State) -> None:
    """Observe a state change made in this process (client or agent): logging, metrics,
    progress bars. Must be quick; exceptions are logged and ignored."""
