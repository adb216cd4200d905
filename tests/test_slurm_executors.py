"""Node executors on the real three-node SLURM test cluster: a multi-node pilot starts one
``python -m pilot.agent.executor`` per other node (one srun each, once) and runs single-slot
units there through it instead of one srun per unit."""

from __future__ import annotations

import collections
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from pilot import ComputeDataService, PilotComputeService, State
from pilot.testing import wait_for
from pilot.testing.fixtures import PilotEnv

pytestmark = pytest.mark.slurm
EXECUTOR = "pilot.agent.executor"
# the node, then the command line of the unit's parent process (the executor, or the agent itself)
WHERE = "echo $SLURMD_NODENAME; tr '\\0' ' ' </proc/$PPID/cmdline; echo"


@pytest.fixture
def env(pilot_env: PilotEnv, slurm_cluster: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> PilotEnv:
    monkeypatch.setenv("PILOT_PSIJ_POLL_INTERVAL", "0.3")
    return pilot_env




def start_pilot(env: PilotEnv, nodes: int, per_node: int, **extra: Any) -> tuple[PilotComputeService, Any]:
    pcs = PilotComputeService()
    pilot = pcs.create_pilot({"service_url": "slurm://localhost", "number_of_processes": nodes * per_node,
                              "processes_per_node": per_node, "walltime": 10, "working_directory": str(env.work),
                              **extra})
    state = wait_for(lambda: (s := pilot.get_state()) != State.Pending and s, 90, "the pilot to start")
    assert state == State.Running, pilot.get_details()["reason"]
    return pcs, pilot


def output(unit: Any) -> list[str]:
    sandbox = unit.get_local_working_directory()
    path = Path(sandbox or "/nonexistent") / "stdout.txt"
    return path.read_text().splitlines() if sandbox and path.exists() else []


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def executors(job_id: str) -> list[int]:
    """Pids of the node executors of batch job ``job_id`` (srun passes SLURM_JOB_ID on)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        argv = cmdline.split(b"\0")
        if (EXECUTOR.encode() in argv and b"srun" not in argv[0] and f"SLURM_JOB_ID={job_id}".encode() in environ
                and alive(int(entry))):
            found.append(int(entry))
    return found


def test_units_on_other_nodes_run_in_executors(env: PilotEnv, slurm_cluster: tuple[str, ...]) -> None:
    """300 short units on three nodes: all nodes used, each unit Done exactly once, and units
    on the other nodes are children of that node's executor, not of an srun each."""
    pcs, pilot = start_pilot(env, 3, 2)
    try:
        job = pilot.get_details()["native_id"]
        assert len(wait_for(lambda: len(executors(job)) == 2 and executors(job), 30, "two executors")) == 2
        log = env.root / "ran.log"
        cds = ComputeDataService()
        cds.add_pilot_compute_service(pcs)
        units = cds.submit_compute_units([{"executable": f"echo u{n} >> {log}; {WHERE}"} for n in range(300)])
        cds.wait(timeout=180)
        assert collections.Counter(u.get_state() for u in units) == {State.Done: 300}
        assert sorted(log.read_text().split()) == sorted(f"u{n}" for n in range(300))
        parents: dict[str, set[str]] = collections.defaultdict(set)
        for unit in units:
            node, parent = output(unit)
            assert unit.get_details()["host"] == node
            parents[node].add("executor" if EXECUTOR in parent else
                              "agent" if "pilot.agent" in parent else parent)
        assert set(parents) == set(slurm_cluster)
        assert sorted(sorted(kinds) for kinds in parents.values()) == [["agent"], ["executor"], ["executor"]]
        assert len(executors(job)) == 2  # started once, still the same two
        cds.cancel()
    finally:
        pilot.cancel()


def test_cancel_and_pilot_cancel_leave_nothing_behind(env: PilotEnv) -> None:
    """Canceling a unit on another node kills it; canceling the pilot ends every executor and unit."""
    _pcs, pilot = start_pilot(env, 3, 1)
    job = pilot.get_details()["native_id"]
    units = [pilot.submit_compute_unit({"executable": f"echo $$; {WHERE}; exec sleep 300"}) for _ in range(3)]
    wait_for(lambda: all(len(output(u)) == 3 for u in units), 60, "the units to run")
    pids = {u.id: int(output(u)[0]) for u in units}
    remote = [u for u in units if EXECUTOR in output(u)[2]]
    assert len(remote) == 2
    victim = remote[0]
    assert alive(pids[victim.id])
    victim.cancel()
    assert victim.wait(timeout=30) == State.Canceled
    wait_for(lambda: not alive(pids[victim.id]), 10, "the canceled unit's process to go")
    assert all(alive(pids[u.id]) for u in units if u is not victim)
    assert len(executors(job)) == 2
    pilot.cancel()
    wait_for(lambda: not executors(job), 30, "the executors to exit")
    wait_for(lambda: not any(alive(pid) for pid in pids.values()), 30, "the unit processes to go")


def test_lost_executor_fails_its_unit_is_restarted_then_given_up(env: PilotEnv,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 of an executor fails its running unit with the reason (its process killed); the
    node's slot comes back and its next unit runs in a new executor; once the restarts (here one)
    are used up, the node's units go through one srun each."""
    monkeypatch.setenv("PILOT_NODE_EXECUTOR_RESTARTS", "1")  # sbatch passes it on to the agent
    _pcs, pilot = start_pilot(env, 3, 1)
    units = [pilot.submit_compute_unit({"executable": f"echo $$; {WHERE}; exec sleep 300"}) for _ in range(3)]
    wait_for(lambda: all(len(output(u)) == 3 for u in units), 60, "the units to run")
    pids = {u.id: int(output(u)[0]) for u in units}
    try:
        victim = next(u for u in units if EXECUTOR in output(u)[2])
        others = [u for u in units if u is not victim]
        node = output(victim)[1]
        executor_pid = parent(pids[victim.id])
        for round_number in (1, 2):
            os.kill(executor_pid, signal.SIGKILL)
            assert victim.wait(timeout=30) == State.Failed
            assert victim.get_details()["reason"].startswith(f"node executor on {node} lost:")
            assert not alive(pids[victim.id])  # the agent killed the orphaned unit before it said Failed
            assert all(u.get_state() == State.Running for u in others)
            victim = pilot.submit_compute_unit({"executable": f"echo $$; {WHERE}; exec sleep 300"})
            wait_for(lambda unit=victim: len(output(unit)) == 3, 60, "the next unit on the node")
            pids[victim.id] = int(output(victim)[0])
            assert output(victim)[1] == node  # the only free slot
            if round_number == 1:
                assert EXECUTOR in output(victim)[2]
                assert parent(pids[victim.id]) != executor_pid
                executor_pid = parent(pids[victim.id])
            else:
                assert EXECUTOR not in output(victim)[2]
    finally:
        pilot.cancel()
        for pid in pids.values():  # nothing may be left should an assertion fail
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_executor_step_holds_the_nodes_cpus_and_units_get_the_pilot_environment(env: PilotEnv) -> None:
    """The executor's job step holds every CPU the job has on its node (not the one CPU of a
    default step, which would confine all its units on a cluster that binds tasks), and its units
    get the pilot's and their own environment."""
    _pcs, pilot = start_pilot(env, 2, 2, environment={"FOO": "from-pilot"})
    try:
        units = [pilot.submit_compute_unit({
            "executable": f"{WHERE}; echo $FOO/$BAR; scontrol show step $SLURM_JOB_ID.$SLURM_STEP_ID",
            "environment": {"BAR": "from unit"}}) for _ in range(8)]
        for unit in units:
            assert unit.wait(timeout=60) == State.Done, unit.get_details()["reason"]
        remote = [output(u) for u in units if EXECUTOR in output(u)[1]]
        assert remote
        for lines in remote:
            assert lines[2] == "from-pilot/from unit"
            assert "Tasks=1" in " ".join(lines) and "CPUs=2 " in " ".join(lines), lines
    finally:
        pilot.cancel()
