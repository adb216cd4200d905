"""Built-ins are plugins like any other: each one blocked with ``PILOT_DISABLE_PLUGINS`` takes
away what it provided, seen through what a user does, and the error names the blocked plugin.

The agent is a separate process that inherits the environment, so a variable set before a fork
pilot is created blocks the plugin in its agent too; the client's session has loaded its plugins
by then only where a test says so (to block a plugin on the agent's side alone).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pilot import ComputeDataService, PilotComputeService, PilotDataService, State
from pilot.errors import PilotError
from pilot.plugin.manager import BLOCK_ENV, BUILTIN_PLUGINS
from pilot.testing import wait_for
from pilot.testing.fixtures import PilotEnv

from helpers import fork_pilot

BATCH_VARIABLES = ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_NODELIST", "PBS_JOBID", "PBS_NODEFILE",
                   "LSB_JOBID", "LSB_MCPU_HOSTS", "LSB_DJOB_HOSTFILE", "LSB_HOSTS")


@pytest.fixture(autouse=True)
def _outside_any_batch_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agents of these tests run on this host outside a batch allocation."""
    for name in BATCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def block(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    assert name in BUILTIN_PLUGINS
    monkeypatch.setenv(BLOCK_ENV, name)


def named(message: str, plugin: str) -> bool:
    """The message names the blocked plugin as the manager's errors do."""
    return f"blocked by {BLOCK_ENV}: {plugin}" in message


def test_every_builtin_has_a_blocking_test_here() -> None:
    tested = {"fork", "sqlite", "local-data", "launch", "host-resources", "batch", "placement"}
    assert set(BUILTIN_PLUGINS) == tested


# --- fork: the fork:// and local:// adaptor ---------------------------------------------------------

@pytest.mark.parametrize("service_url", ["fork://localhost", "local://"])
def test_fork_blocked_refuses_local_pilots(monkeypatch: pytest.MonkeyPatch, service_url: str) -> None:
    block(monkeypatch, "fork")
    scheme = service_url.partition(":")[0]
    with pytest.raises(PilotError, match=f"no resource adaptor for scheme '{scheme}'") as info:
        PilotComputeService().create_pilot({"service_url": service_url, "working_directory": os.getcwd()})
    assert named(str(info.value), "fork")
    assert info.value.key == "service_url"


# --- sqlite: the embedded store ---------------------------------------------------------------------

def test_sqlite_blocked_refuses_the_default_store(monkeypatch: pytest.MonkeyPatch, pilot_env: PilotEnv) -> None:
    block(monkeypatch, "sqlite")
    with pytest.raises(PilotError, match="no coordination store for scheme 'sqlite'") as info:
        PilotComputeService()
    assert named(str(info.value), "sqlite")
    assert info.value.key == "coordination_url"
    assert not (pilot_env.root / "home" / "store.sqlite").exists()


# --- local-data: file:// PilotData and every local file the data side handles ----------------------

@pytest.mark.parametrize("url", ["file://{}", "{}"])
def test_local_data_blocked_refuses_file_pilot_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                     url: str) -> None:
    block(monkeypatch, "local-data")
    place = tmp_path / "pd"
    with pytest.raises(PilotError, match="no data backend for scheme 'file'") as info:
        PilotDataService().create_pilot({"service_url": url.format(place)})
    assert named(str(info.value), "local-data")
    assert not place.exists()


def test_local_data_blocked_in_the_agent_fails_staging_clearly(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    # the client stores a DU in a file:// PilotData while local-data is loaded in its session ...
    pd = PilotDataService().create_pilot({"service_url": f"file://{tmp_path / 'pd'}"})
    source = tmp_path / "input.txt"
    source.write_text("data\n")
    du = pd.submit_data_unit({"file_urls": [str(source)]})
    assert du.wait(timeout=30) == State.Running
    # ... then the agent starts with it blocked: no local file handling is left in the agent
    block(monkeypatch, "local-data")
    pilot = fork_pilot(PilotComputeService())
    with_du = pilot.submit_compute_unit({"executable": "/bin/cat", "arguments": ["input.txt"],
                                         "input_data": [du.get_url()]})
    with_file = pilot.submit_compute_unit({"executable": "/bin/cat", "arguments": ["input.txt"],
                                           "file_transfer": [f"{source} > SUBJOB_WORK_DIR/input.txt"]})
    for unit in (with_du, with_file):
        assert unit.wait(timeout=60) == State.Failed
        reason = unit.get_details()["reason"]
        assert "input staging failed" in reason
        assert "no data backend for scheme 'file'" in reason
        assert named(reason, "local-data")
        sandbox = unit.get_local_working_directory()
        assert sandbox is not None
        assert not Path(sandbox, "input.txt").exists()
    assert du.get_state() == State.Running  # the stored data unit is untouched


# --- launch: the fork and mpirun launch methods -----------------------------------------------------

def test_launch_blocked_fails_units_naming_the_launch_method(monkeypatch: pytest.MonkeyPatch) -> None:
    block(monkeypatch, "launch")
    pilot = fork_pilot(PilotComputeService(), slots=2)
    plain = pilot.submit_compute_unit({"executable": "/bin/true"})
    mpi = pilot.submit_compute_unit({"executable": "/bin/true", "number_of_processes": 2,
                                     "spmd_variation": "mpi"})
    for unit, method in ((plain, "fork"), (mpi, "mpirun")):
        assert unit.wait(timeout=60) == State.Failed
        reason = unit.get_details()["reason"]
        assert f"no launch method '{method}'" in reason
        assert named(reason, "launch")
    assert pilot.get_state() == State.Running  # the agent itself keeps serving


def test_launch_blocked_a_node_executor_fails_its_units_too(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    """The node executor of a multi-node pilot (started on another node through srun, which
    passes the environment on) asks its own plugin manager for the ``fork`` launch method."""
    block(monkeypatch, "launch")
    request = {"op": "start", "id": "unit-1", "description": {"executable": "/bin/true"}, "sandbox": str(tmp_path)}
    with subprocess.Popen([sys.executable, "-m", "pilot.agent.executor"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as executor:
        assert executor.stdin is not None and executor.stdout is not None
        assert json.loads(executor.stdout.readline())["event"] == "ready"
        executor.stdin.write(json.dumps(request) + "\n")
        executor.stdin.flush()
        event = json.loads(executor.stdout.readline())
        executor.stdin.close()
        assert executor.wait(timeout=30) == 0
    assert event["event"] == "failed"
    assert event["id"] == "unit-1"
    assert "no launch method 'fork'" in event["reason"]
    assert named(event["reason"], "launch")


# --- host-resources: the slots of this host outside a batch system ----------------------------------

def test_host_resources_blocked_fails_the_pilot_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    block(monkeypatch, "host-resources")
    pilot = PilotComputeService().create_pilot({"service_url": "fork://localhost", "number_of_processes": 1,
                                                "working_directory": os.path.join(os.getcwd(), "work")})
    wait_for(lambda: pilot.get_state().is_final, 60, "the pilot to end")
    assert pilot.get_state() == State.Failed
    reason = pilot.get_details()["reason"]
    assert "no plugin describes the agent's resources" in reason
    assert named(reason, "host-resources")


# --- batch: slot discovery inside SLURM, PBS and LSF allocations ------------------------------------

@pytest.mark.parametrize("blocked", [False, True], ids=["batch-loaded", "batch-blocked"])
def test_batch_blocked_the_agent_no_longer_sees_the_allocation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                               blocked: bool) -> None:
    """A fork pilot whose agent runs in a (fake) PBS job's environment: three slots on this host
    in its node file. With ``batch`` loaded the agent takes the allocation's slots; blocked, it
    falls back to the host resources: the one slot the pilot asked for."""
    nodefile = tmp_path / "nodefile"
    nodefile.write_text(f"{socket.gethostname()}\n" * 3)
    monkeypatch.setenv("PBS_JOBID", "4242.fake-server")
    monkeypatch.setenv("PBS_NODEFILE", str(nodefile))
    if blocked:
        block(monkeypatch, "batch")
    pilot = fork_pilot(PilotComputeService(), slots=1)
    unit = pilot.submit_compute_unit({"executable": "/bin/true"})
    assert unit.wait(timeout=60) == State.Done
    details = pilot.get_details()
    assert details["hosts"] == [socket.gethostname()]
    assert details["slots"] == (1 if blocked else 3)


# --- placement: the built-in placement policy --------------------------------------------------------

@pytest.mark.parametrize("blocked", [False, True], ids=["placement-loaded", "placement-blocked"])
def test_placement_blocked_only_unconstrained_units_run(monkeypatch: pytest.MonkeyPatch, pilot_env: PilotEnv,
                                                        blocked: bool) -> None:
    """Blocking ``placement`` removes the built-in policy, and no other answers
    ``pilot_place_unit``: agents still pull units without constraints from the queue, but a unit
    with an affinity label (or input data) could only be placed by a policy, so it fails at
    submission with a reason naming the blocked plugin instead of waiting forever. Loaded, the
    same unit runs."""
    if blocked:
        block(monkeypatch, "placement")
    pcs = PilotComputeService()
    pilot = fork_pilot(pcs, slots=1, affinity_datacenter_label="dc1")
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    labelled = cds.submit_compute_unit({"executable": "/bin/true", "affinity_datacenter_label": "dc1"})
    plain = cds.submit_compute_unit({"executable": "/bin/true"})
    assert plain.wait(timeout=60) == State.Done
    if blocked:
        assert labelled.get_state() == State.Failed
        assert labelled.get_details()["pilot"] is None
        assert "no placement policy" in labelled.get_details()["reason"]
        assert "blocked by PILOT_DISABLE_PLUGINS: placement" in labelled.get_details()["reason"]
        assert "placement" not in pilot_env.session.plugins.plugin_names()
    else:
        assert labelled.wait(timeout=60) == State.Done
        assert labelled.get_details()["pilot"] == pilot.get_url()
    cds.cancel()
