"""Typed records that plugins return from registration hooks, and the protocols they implement."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from pilot.descriptions import PilotComputeDescription
from pilot.states import State
from pilot.store import CoordinationStore


@dataclasses.dataclass(frozen=True)
class PilotJobRequest:
    """What an adaptor gets to submit one pilot: run ``agent_argv`` in ``sandbox``, after the
    shell commands in ``pre_commands`` (from the site configuration) when the job script has any."""

    pilot_id: str
    description: PilotComputeDescription
    sandbox: Path
    agent_argv: tuple[str, ...]
    environment: Mapping[str, str]
    pre_commands: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class NativeStatus:
    """The batch system's view of a pilot job, mapped to a pilot state."""

    state: State
    message: str = ""


class ResourceAdaptor(Protocol):
    """Submits pilot jobs that run the agent, reports their state, cancels them.

    Optional methods the core calls when an adaptor has them: ``check(request)``, before
    anything is stored or submitted (a ``PilotError`` there is raised by ``create_pilot``: a pilot
    the adaptor can never run), and ``close()``, when the session closes (watch threads,
    connections)."""

    def submit(self, request: PilotJobRequest) -> str:
        """Submit the job; return its native id. Raise ``PilotError`` when it is rejected."""

    def status(self, native_id: str) -> NativeStatus:
        """The job's current state (``Unknown`` when this process cannot tell)."""

    def cancel(self, native_id: str) -> None:
        """End the job and every process it started; a job already gone is not an error."""


@dataclasses.dataclass(frozen=True)
class ResourceAdaptorRecord:
    """Registers an adaptor for URL schemes; ``factory(service_url)`` builds one."""

    name: str
    schemes: tuple[str, ...]
    factory: Callable[[str], ResourceAdaptor]


@dataclasses.dataclass(frozen=True)
class CoordinationStoreRecord:
    """Registers a coordination store for URL schemes; ``open(url)`` connects to one. An
    ``open`` that also takes ``create=False`` is called so when reconnecting by an object URL:
    it must then raise ``PilotError`` rather than create a store that does not exist."""

    name: str
    schemes: tuple[str, ...]
    open: Callable[[str], CoordinationStore]


@dataclasses.dataclass(frozen=True)
class LaunchRequest:
    """One unit to start: its shell command line and the slots it was given (one host each)."""

    command_line: str
    hosts: tuple[str, ...]
    sandbox: Path
    processes: int
    mpi: bool


class LaunchMethod(Protocol):
    """Turns a unit's command line into the argv the agent executes."""

    def argv(self, request: LaunchRequest) -> list[str]:
        """The argv that starts the unit on its slots."""


@dataclasses.dataclass(frozen=True)
class LaunchMethodRecord:
    """Registers a launch method under a name (``fork``, ``mpirun``, ``srun`` ...)."""

    name: str
    method: LaunchMethod


@dataclasses.dataclass(frozen=True)
class NodeSlots:
    """One node of the allocation and how many unit slots it offers."""

    host: str
    slots: int


@dataclasses.dataclass(frozen=True)
class AgentResources:
    """The slots an agent found, and the launch methods to reach other nodes and run MPI units.
    ``local_host`` names the node the agent runs on (as it appears in ``nodes``); empty means
    ``socket.gethostname()``. Units on other nodes start through ``remote_launch_method``."""

    nodes: tuple[NodeSlots, ...]
    remote_launch_method: str = "fork"
    mpi_launch_method: str = "mpirun"
    source: str = "host"
    local_host: str = ""

    @property
    def total_slots(self) -> int:
        """All slots of all nodes."""
        return sum(node.slots for node in self.nodes)


@dataclasses.dataclass(frozen=True)
class PilotView:
    """What the placement policy sees of a pilot. ``free``: how many more slots' worth of units
    it may be given now (its slots and its prefetch bound, less the slots of its unfinished
    units); 0 for a pilot that is not ``Running`` yet."""

    id: str
    state: State
    slots: int
    free: int
    datacenter: str | None
    machine: str | None


@dataclasses.dataclass(frozen=True)
class UnitView:
    """What the placement policy sees of a queued unit."""

    id: str
    slots: int
    datacenter: str | None
    machine: str | None
    input_data: Sequence[str] = ()
    #: (datacenter, machine) labels of the PilotData holding a complete replica of every DU in
    #: ``input_data``; empty when the unit has no input data or labels are unknown.
    data_labels: Sequence[tuple[str | None, str | None]] = ()


@dataclasses.dataclass(frozen=True)
class FileInfo:
    """One stored file as a data backend sees it: its name in its place, its size in bytes, and
    a checksum (``"sha256:<hex>"``) when the backend gives one cheaply, else None."""

    name: str
    size: int
    checksum: str | None = None


class DataBackend(Protocol):
    """Stores files at URLs of its schemes. A storage place is a directory-like URL; files are
    ``<place>/<name>``. ``options`` are the backend keys of the PilotData (``extra``): never
    secrets. Errors are ``PilotError``; ``TransientDataError`` marks ones worth retrying.
    Every write lands under a temporary name and is renamed, so no half file carries its name."""

    def create_place(self, url: str, options: Mapping[str, Any]) -> None:
        """Create the place (and its parents); an existing place is fine."""

    def put(self, local_path: str, url: str, options: Mapping[str, Any]) -> FileInfo:
        """Store the local file at ``url``; return what was stored."""

    def get(self, url: str, local_path: str, options: Mapping[str, Any]) -> FileInfo:
        """Fetch ``url`` into the local file; return what was fetched."""

    def list(self, url: str, options: Mapping[str, Any]) -> list[FileInfo]:
        """The files directly in place ``url`` (none when it does not exist), sorted by name."""

    def stat(self, url: str, options: Mapping[str, Any]) -> FileInfo:
        """The stored file at ``url``; ``PilotError`` when there is none."""

    def remove(self, url: str, options: Mapping[str, Any]) -> None:
        """Remove a file or a whole place; a missing one is fine."""

    def copy(self, src_url: str, dst_url: str, options: Mapping[str, Any]) -> FileInfo:
        """Copy a file between two URLs of this backend (another place, maybe another host)."""

    def local_path(self, url: str) -> str | None:
        """The path of ``url`` on this host's filesystem when it has one (so it can be linked)."""

    def close(self) -> None:
        """Release connections."""


class BatchDataBackend(DataBackend, Protocol):
    """Optional methods of a backend that moves many files in one operation (one Globus Transfer
    task for a whole DataUnit). When a backend has them the core hands it a DataUnit's files at
    once, for replication and copies (``copy_many``), storing local files (``put_many``) and
    fetching them (``get_many``); otherwise it calls ``copy``, ``put`` and ``get`` per file.
    Every pair is within one place of this backend; answers are in the order of ``pairs``."""

    def copy_many(self, pairs: Sequence[tuple[str, str]], options: Mapping[str, Any]) -> list[FileInfo]:
        """Copy each ``(src_url, dst_url)`` (both URLs of this backend)."""

    def put_many(self, pairs: Sequence[tuple[str, str]], options: Mapping[str, Any]) -> list[FileInfo]:
        """Store each ``(local_path, url)``."""

    def get_many(self, pairs: Sequence[tuple[str, str]], options: Mapping[str, Any]) -> list[FileInfo]:
        """Fetch each ``(url, local_path)``."""


@dataclasses.dataclass(frozen=True)
class DataBackendRecord:
    """Registers a data backend for URL schemes; ``factory()`` builds one (one per session)."""

    name: str
    schemes: tuple[str, ...]
    factory: Callable[[], DataBackend]
