"""Slot discovery and launch methods for batch allocations (``pilot.builtin.batch``), from the
environment SLURM, PBS and LSF give a job; no batch system needed."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pilot.builtin.batch import expand_counts, expand_hostlist
from pilot.plugin.manager import PluginManager
from pilot.plugin.types import AgentResources, LaunchRequest, NodeSlots


def resources(environ: dict[str, str], requested: int = 2) -> AgentResources:
    found = PluginManager(entry_points=False).agent_resources(environ, requested)
    assert found is not None
    return found


@pytest.mark.parametrize(("expression", "hosts"), [
    ("n[1-3]", ["n1", "n2", "n3"]),
    ("n1,n3", ["n1", "n3"]),
    ("gpu[08-10,12],login", ["gpu08", "gpu09", "gpu10", "gpu12", "login"]),
    ("r[1-2]-c[1-2]", ["r1-c1", "r1-c2", "r2-c1", "r2-c2"]),
])
def test_expand_hostlist(expression: str, hosts: list[str]) -> None:
    assert expand_hostlist(expression) == hosts


def test_expand_counts() -> None:
    assert expand_counts("2(x3),1") == [2, 2, 2, 1]


def test_slurm_allocation() -> None:
    found = resources({"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n[1-3]", "SLURM_TASKS_PER_NODE": "2(x2),1",
                       "SLURMD_NODENAME": "n1"})
    assert found.nodes == (NodeSlots("n1", 2), NodeSlots("n2", 2), NodeSlots("n3", 1))
    assert (found.source, found.local_host) == ("slurm", "n1")
    assert (found.remote_launch_method, found.mpi_launch_method) == ("srun", "srun")


def test_pbs_allocation(tmp_path: Path) -> None:
    nodefile = tmp_path / "nodes"
    nodefile.write_text("c1\nc1\nc2\nc2\nc2\n")
    found = resources({"PBS_JOBID": "5.server", "PBS_NODEFILE": str(nodefile)})
    assert found.nodes == (NodeSlots("c1", 2), NodeSlots("c2", 3))
    assert (found.source, found.remote_launch_method, found.mpi_launch_method) == ("pbs", "pbsdsh", "mpiexec")


def test_lsf_allocation(tmp_path: Path) -> None:
    found = resources({"LSB_JOBID": "9", "LSB_MCPU_HOSTS": "h1 4 h2 2"})
    assert found.nodes == (NodeSlots("h1", 4), NodeSlots("h2", 2))
    assert (found.source, found.remote_launch_method) == ("lsf", "blaunch")
    assert resources({"LSB_JOBID": "9", "LSB_HOSTS": "h1 h1 h3"}).nodes == (NodeSlots("h1", 2), NodeSlots("h3", 1))


def test_plain_host_fallback() -> None:
    found = resources({"HOME": "/root"}, requested=3)
    assert found.source == "host"
    assert found.nodes == (NodeSlots(socket.gethostname(), 3),)


def launch(name: str, request: LaunchRequest) -> list[str]:
    argv: list[str] = PluginManager(entry_points=False).launch_method(name).method.argv(request)
    return argv


def test_srun_single_and_mpi(tmp_path: Path) -> None:
    single = LaunchRequest("echo $HOST", ("n2",), tmp_path, 1, False)
    assert launch("srun", single) == ["srun", "--nodes=1", "--ntasks=1", "--nodelist=n2", "--overlap", "--quiet",
                                      "/bin/sh", "-c", "echo $HOST"]
    mpi = launch("srun", LaunchRequest("./a.out", ("n1", "n2", "n2"), tmp_path, 3, True))
    assert mpi[:3] == ["env", "-u", "SLURM_NTASKS_PER_NODE"]
    assert "--ntasks=3" in mpi
    assert "--nodes=2" in mpi
    assert "--nodelist=n1,n2,n2" in mpi
    assert mpi[-1] == "./a.out"


def test_mpiexec_pbsdsh_blaunch(tmp_path: Path) -> None:
    (tmp_path / "hostfile").write_text("the user's own\n")
    mpi = launch("mpiexec", LaunchRequest("./a.out", ("c1", "c2"), tmp_path, 2, True))
    assert mpi[:4] == ["mpiexec", "-n", "2", "-hostfile"] and mpi[5:] == ["./a.out"]
    assert Path(mpi[4]).parent == tmp_path and Path(mpi[4]).name.startswith(".pilot-hostfile-")
    assert Path(mpi[4]).read_text() == "c1\nc2\n"
    assert (tmp_path / "hostfile").read_text() == "the user's own\n"
    remote = LaunchRequest("echo 'a b' > out", ("c2",), tmp_path, 1, False)
    assert launch("pbsdsh", remote) == ["pbsdsh", "-o", "-h", "c2", "--", "/bin/sh", "-c",
                                        'cd "$1" && exec /bin/sh -c "$2"', "sh", str(tmp_path), "echo 'a b' > out"]
    assert launch("blaunch", remote)[:2] == ["blaunch", "c2"]
