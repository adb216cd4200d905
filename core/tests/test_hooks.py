"""One test per registration hook, named ``test_hook_<hook>`` as ``test_docs`` requires (the
``pilot_place_unit`` and ``pilot_state_changed`` ones are in ``test_policy_and_observers``): a
plugin implementing the hook, loaded into a plugin manager like a third-party one, and what a
user of the API or of the manager then sees."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pilot import ComputeDataService, PilotComputeService, PilotDataService, PilotError, State
from pilot.plugin import hookimpl
from pilot.plugin.manager import PluginManager
from pilot.plugin.types import (
    AgentResources,
    CoordinationStoreRecord,
    DataBackend,
    DataBackendRecord,
    FileInfo,
    LaunchMethodRecord,
    LaunchRequest,
    NodeSlots,
    ResourceAdaptor,
    ResourceAdaptorRecord,
)
from pilot.session import Session
from pilot.store import CoordinationStore
from pilot.testing import wait_for
from pilot.testing.fixtures import PilotEnv

BUILTINS = PluginManager(entry_points=False)


def _session(**plugins: object) -> Session:
    return Session(PluginManager(entry_points=False, extra_plugins=plugins))


class RelayAdaptors:
    """Registers ``relay://``, which runs pilots through the fork adaptor it was given."""

    def __init__(self) -> None:
        self.submitted: list[str] = []

    def _relay(self, service_url: str) -> ResourceAdaptor:
        fork = BUILTINS.adaptor_for("fork").factory(service_url)
        plugin = self

        class Relay:
            def submit(self, request: Any) -> str:
                plugin.submitted.append(request.pilot_id)
                return fork.submit(request)

            def status(self, native_id: str) -> Any:
                return fork.status(native_id)

            def cancel(self, native_id: str) -> None:
                fork.cancel(native_id)

        return Relay()

    @hookimpl
    def pilot_resource_adaptors(self) -> list[ResourceAdaptorRecord]:
        return [ResourceAdaptorRecord(name="relay", schemes=("relay",), factory=self._relay)]


def test_hook_pilot_resource_adaptors(pilot_env: PilotEnv) -> None:
    plugin = RelayAdaptors()
    session = _session(relay=plugin)
    pcs = PilotComputeService(session=session)
    pilot = pcs.create_pilot({"service_url": "relay://localhost", "working_directory": str(pilot_env.work)})
    unit = pilot.submit_compute_unit({"executable": "/bin/echo", "arguments": ["relayed"], "output": "out.txt"})
    assert unit.wait(timeout=60) == State.Done
    assert plugin.submitted == [pilot.id]
    assert "relayed" in Path(unit.get_details()["sandbox"], "out.txt").read_text()
    pcs.cancel()
    with pytest.raises(PilotError, match="no resource adaptor for scheme 'relay'"):
        PilotComputeService(session=Session(BUILTINS)).create_pilot({"service_url": "relay://localhost"})


class MirrorStores:
    """Registers ``mirror://<path>``: the embedded SQLite store at that path."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    def _open(self, url: str) -> CoordinationStore:
        self.opened.append(url)
        return BUILTINS.store_for("sqlite").open("sqlite://" + url.partition("://")[2])

    @hookimpl
    def pilot_coordination_stores(self) -> list[CoordinationStoreRecord]:
        return [CoordinationStoreRecord(name="mirror", schemes=("mirror",), open=self._open)]


def test_hook_pilot_coordination_stores(pilot_env: PilotEnv) -> None:
    plugin = MirrorStores()
    path = pilot_env.root / "mirror.sqlite"
    session = _session(mirror=plugin)
    url = "mirror://" + urllib.parse.quote(str(path))
    pcs = PilotComputeService(coordination_url=url, session=session)
    pilot = pcs.create_pilot({"service_url": "fork://localhost", "working_directory": str(pilot_env.work)})
    cds = ComputeDataService(coordination_url=url, session=session)
    cds.add_pilot_compute_service(pcs)
    unit = cds.submit_compute_unit({"executable": "/bin/true"})
    cds.wait(timeout=60)
    assert unit.get_state() == State.Done
    assert plugin.opened == [url] and path.exists()
    assert pilot.get_state() == State.Running
    pcs.cancel()


class PrefixedBackends:
    """Registers ``vault://<path>``: files under ``<root>/<path>`` through the local backend."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _backend(self) -> DataBackend:
        local = BUILTINS.data_backend_for("file").factory()
        root = self.root

        def url_of(url: str) -> str:
            return (root / url.partition("://")[2].lstrip("/")).as_uri()

        class Vault:
            def create_place(self, url: str, options: Mapping[str, Any]) -> None:
                local.create_place(url_of(url), options)

            def put(self, local_path: str, url: str, options: Mapping[str, Any]) -> FileInfo:
                return local.put(local_path, url_of(url), options)

            def get(self, url: str, local_path: str, options: Mapping[str, Any]) -> FileInfo:
                return local.get(url_of(url), local_path, options)

            def list(self, url: str, options: Mapping[str, Any]) -> list[FileInfo]:
                return local.list(url_of(url), options)

            def stat(self, url: str, options: Mapping[str, Any]) -> FileInfo:
                return local.stat(url_of(url), options)

            def remove(self, url: str, options: Mapping[str, Any]) -> None:
                local.remove(url_of(url), options)

            def copy(self, src_url: str, dst_url: str, options: Mapping[str, Any]) -> FileInfo:
                return local.copy(url_of(src_url), url_of(dst_url), options)

            def local_path(self, url: str) -> str | None:
                return None  # as a remote store: files are always copied

            def close(self) -> None:
                local.close()

        return Vault()

    @hookimpl
    def pilot_data_backends(self) -> list[DataBackendRecord]:
        return [DataBackendRecord(name="vault", schemes=("vault",), factory=self._backend)]


def test_hook_pilot_data_backends(pilot_env: PilotEnv) -> None:
    vault = pilot_env.root / "vault"
    session = _session(vault=PrefixedBackends(vault))
    source = pilot_env.root / "input.txt"
    source.write_text("kept in the vault\n")
    pds = PilotDataService(session=session)
    pd = pds.create_pilot({"service_url": "vault:///project"})
    du = pd.submit_data_unit({"file_urls": [str(source)]})
    assert du.wait(timeout=60) == State.Running  # stored (Done once released)
    stored = list((vault / "project").rglob("input.txt"))
    assert [p.read_text() for p in stored] == ["kept in the vault\n"]
    assert list(du.list()) == ["input.txt"]
    pds.cancel()


class EchoLaunch:
    """A launch method that prefixes the unit's command line with ``echo`` (a dry run)."""

    def argv(self, request: LaunchRequest) -> list[str]:
        return ["/bin/echo", "dry-run:", request.command_line]

    @hookimpl
    def pilot_launch_methods(self) -> list[LaunchMethodRecord]:
        return [LaunchMethodRecord(name="dry-run", method=self)]


def test_hook_pilot_launch_methods() -> None:
    manager = PluginManager(entry_points=False, extra_plugins={"dry-run": EchoLaunch()})
    request = LaunchRequest("/bin/hostname -f", ("n1",), Path("/tmp"), 1, False)
    assert manager.launch_method("dry-run").method.argv(request) == ["/bin/echo", "dry-run:", "/bin/hostname -f"]
    with pytest.raises(PilotError, match="launch method 'dry-run' is claimed by two plugins: 'a' and 'b'"):
        PluginManager(entry_points=False, extra_plugins={"a": EchoLaunch(), "b": EchoLaunch()})


class GridResources:
    """Recognises an allocation described by ``MYGRID_NODES=host:slots,...``."""

    @hookimpl
    def pilot_agent_resources(self, environ: Mapping[str, str], requested_slots: int) -> AgentResources | None:
        raw = environ.get("MYGRID_NODES")
        if not raw:
            return None
        nodes = tuple(NodeSlots(host, int(slots)) for host, _, slots in (n.partition(":") for n in raw.split(",")))
        return AgentResources(nodes=nodes, remote_launch_method="dry-run", source="mygrid")


def test_hook_pilot_agent_resources() -> None:
    manager = PluginManager(entry_points=False, extra_plugins={"mygrid": GridResources()})
    found = manager.agent_resources({"MYGRID_NODES": "g1:4,g2:8"}, 2)
    assert found is not None and found.source == "mygrid" and found.total_slots == 12
    fallback = manager.agent_resources({}, 3)
    assert fallback is not None and fallback.source == "host" and fallback.total_slots == 3


class WrongAnswers:
    """A plugin breaking the contract: its answers have the wrong types."""

    @hookimpl
    def pilot_resource_adaptors(self) -> list[ResourceAdaptorRecord]:
        return ["fork"]  # type: ignore[list-item]


def test_a_wrong_answer_to_a_hook_names_the_plugin_and_the_hook() -> None:
    expected = "plugin 'wrong': pilot_resource_adaptors returned str, not ResourceAdaptorRecord"
    with pytest.raises(PilotError, match=expected):
        PluginManager(entry_points=False, extra_plugins={"wrong": WrongAnswers()})


def test_every_pilot_of_a_relay_is_canceled_with_its_service(pilot_env: PilotEnv) -> None:
    session = _session(relay=RelayAdaptors())
    pcs = PilotComputeService(session=session)
    pilot = pcs.create_pilot({"service_url": "relay://localhost", "working_directory": str(pilot_env.work)})
    wait_for(lambda: pilot.get_state() == State.Running, 30, "relay pilot running")
    pcs.cancel()
    assert pilot.get_state() == State.Canceled


class CheckedAdaptors:
    """Registers ``small://``: fork pilots of at most 2 slots, refused by ``check`` above that;
    its adaptor records whether the session closed it."""

    def __init__(self) -> None:
        self.closed = 0

    def _small(self, service_url: str) -> ResourceAdaptor:
        fork = BUILTINS.adaptor_for("fork").factory(service_url)
        plugin = self

        class Small:
            def check(self, request: Any) -> None:
                if request.description.number_of_processes > 2:
                    raise PilotError("small:// pilots have at most 2 slots", key="number_of_processes")

            def submit(self, request: Any) -> str:
                return fork.submit(request)

            def status(self, native_id: str) -> Any:
                return fork.status(native_id)

            def cancel(self, native_id: str) -> None:
                fork.cancel(native_id)

            def close(self) -> None:
                plugin.closed += 1

        return Small()

    @hookimpl
    def pilot_resource_adaptors(self) -> list[ResourceAdaptorRecord]:
        return [ResourceAdaptorRecord(name="small", schemes=("small",), factory=self._small)]


def test_an_adaptor_check_refuses_at_create_pilot_and_close_runs_with_the_session(pilot_env: PilotEnv) -> None:
    """``check(request)`` refuses before anything is stored or submitted: ``create_pilot``
    raises, no pilot record exists; ``Session.close()`` closes the adaptor."""
    plugin = CheckedAdaptors()
    session = _session(small=plugin)
    pcs = PilotComputeService(session=session)
    with pytest.raises(PilotError, match="at most 2 slots"):
        pcs.create_pilot({"service_url": "small://localhost", "number_of_processes": 3,
                          "working_directory": str(pilot_env.work)})
    assert pcs.list_pilots() == []
    pilot = pcs.create_pilot({"service_url": "small://localhost", "number_of_processes": 2,
                              "working_directory": str(pilot_env.work)})
    wait_for(lambda: pilot.get_state() == State.Running, 30, "small pilot running")
    pcs.cancel()
    session.close()
    assert plugin.closed == 1
