"""pbs:// and lsf:// pilots against FAKE batch commands (``pilot.testing.fake_batch``: fake
``qsub``/``qstat``/``qdel`` and ``bsub``/``bjobs``/``bkill`` that run the job script on this
host). No real PBS or LSF is involved: these tests check the job scripts PSI/J generates from
pilot descriptions, the states parsed from the fake reports, slot discovery from the PBS/LSF
environment, and cancel."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from pilot import PilotComputeService, State
from pilot.states import FINAL_STATES
from pilot.testing import fake_batch, wait_for
from pilot.testing.fake_batch.commands import process_tree
from pilot.testing.fixtures import PilotEnv
from pilot_psij.adaptor import PsijAdaptor


@pytest.fixture
def fake(pilot_env: PilotEnv, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The FAKE batch commands first on PATH; returns their state directory."""
    state = pilot_env.root / "fake-batch"
    bin_dir = fake_batch.install(pilot_env.root / "fake-bin", state)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    monkeypatch.setenv("PILOT_PSIJ_POLL_INTERVAL", "0.2")
    return state




def fake_job(state: Path, native_id: str) -> dict[str, Any]:
    return fake_batch.jobs(state)[native_id]


def create(pilot_env: PilotEnv, scheme: str, **extra: Any) -> Any:
    pcs = PilotComputeService()
    return pcs.create_pilot({"service_url": f"{scheme}://localhost", "working_directory": str(pilot_env.work),
                             **extra})


@pytest.mark.parametrize(("scheme", "expected"), [
    ("pbs", ["#PBS -l select=2:ncpus=2:mpiprocs=2", "#PBS -l walltime=0:2:0", "#PBS -q debug", "#PBS -A proj1",
             "export FOO='bar baz'"]),
    ("lsf", ["#BSUB -n 4", "#BSUB -nnodes 2", "#BSUB -W 0:2", '#BSUB -q "debug"', '#BSUB -P "proj1"',
             "#BSUB -env FOO='bar baz'"]),
])
def test_job_script_from_description(pilot_env: PilotEnv, fake: Path, scheme: str, expected: list[str]) -> None:
    """FAKE qsub/bsub: the script PSI/J generated carries the description and starts the agent."""
    pilot = create(pilot_env, scheme, number_of_processes=4, processes_per_node=2, walltime=2, queue="debug",
                   project="proj1", environment={"FOO": "bar baz"})
    assert pilot.get_state() in (State.Pending, State.Running), pilot.get_details()["reason"]
    script = fake_job(fake, pilot.get_details()["native_id"])["script"]
    for line in expected:
        assert line in script
    assert pilot.get_id() in script  # job name and agent argv
    assert f"-m pilot.agent --pilot {pilot.get_id()}" in script
    assert "--drain-margin 6" in script  # 5% of two minutes
    pilot.cancel()


@pytest.mark.parametrize("scheme", ["pbs", "lsf"])
def test_states_units_and_cancel(pilot_env: PilotEnv, fake: Path, scheme: str,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """FAKE batch commands: queued -> Pending, agent up -> Running with the allocation's slots,
    a unit runs, cancel kills the job's processes and the pilot is Canceled."""
    monkeypatch.setenv("FAKE_BATCH_HOLD", "1")
    pilot = create(pilot_env, scheme, number_of_processes=3, walltime=5, environment={"FOO": "from-pilot"})
    native_id = pilot.get_details()["native_id"]
    adaptor = PsijAdaptor(f"{scheme}://localhost", scheme)  # a fresh one, as another process would have
    assert wait_for(lambda: adaptor.status(native_id).state != State.Unknown, what="first poll") is True
    assert adaptor.status(native_id).state in (State.Pending, State.Running)
    assert pilot.get_state() == State.Pending
    wait_for(lambda: pilot.get_state() == State.Running, what="the agent")
    assert pilot.get_details()["slots"] == 3
    assert pilot.get_details()["hosts"] == [socket.gethostname()]
    wait_for(lambda: adaptor.status(native_id).state == State.Running, what="the job to run")
    unit = pilot.submit_compute_unit({"executable": "echo $FOO"})
    assert unit.wait(timeout=30) == State.Done
    assert (Path(unit.get_local_working_directory()) / "stdout.txt").read_text().strip() == "from-pilot"
    job_pid = fake_job(fake, native_id)["pid"]
    pilot.cancel()
    assert pilot.get_state() == State.Canceled
    record = wait_for(lambda: (j := fake_job(fake, native_id))["state"] == "finished" and j, what="job end")
    assert record["canceled"]
    assert not fake_batch.process_alive(job_pid)
    assert wait_for(lambda: (s := adaptor.status(native_id)).state in FINAL_STATES and s, what="final state")


@pytest.mark.parametrize(("scheme", "message"), [("pbs", "Unknown queue"), ("lsf", "No such queue")])
def test_rejected_queue(pilot_env: PilotEnv, fake: Path, scheme: str, message: str) -> None:
    """FAKE qsub/bsub reject an unknown queue: the pilot is Failed with their message."""
    pilot = create(pilot_env, scheme, queue="nope")
    assert pilot.get_state() == State.Failed
    assert pilot.get_details()["reason"].startswith("submission failed:")
    assert message in pilot.get_details()["reason"]


@pytest.mark.parametrize(("scheme", "command"), [("pbs", "qsub"), ("lsf", "bsub")])
def test_a_machine_without_the_batch_commands_fails_the_pilot_naming_the_command(
        pilot_env: PilotEnv, monkeypatch: pytest.MonkeyPatch, scheme: str, command: str) -> None:
    """No batch commands on PATH (a laptop, or a node without the client tools): the pilot is
    Failed with a reason that names the missing command, not a bare errno."""
    empty = pilot_env.root / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    pilot = create(pilot_env, scheme)
    assert pilot.get_state() == State.Failed
    reason = pilot.get_details()["reason"]
    assert f"its command '{command}' is not on PATH" in reason and "Errno" not in reason


def test_job_exit_is_failed_with_reason(pilot_env: PilotEnv, fake: Path) -> None:
    """FAKE qsub: a pilot job killed under the agent (as by a node failure) ends Failed, with the
    batch job named in the reason."""
    pcs = PilotComputeService()
    pilot = pcs.create_pilot({"service_url": "pbs://localhost", "working_directory": str(pilot_env.work)})
    native_id = pilot.get_details()["native_id"]
    adaptor = PsijAdaptor("pbs://localhost", "pbs")
    wait_for(lambda: fake_job(fake, native_id)["state"] != "queued", what="job start")
    wait_for(lambda: pilot.get_state() == State.Running, what="the agent")
    for pid in process_tree(fake_job(fake, native_id)["pid"]):
        os.kill(pid, signal.SIGKILL)
    status = wait_for(lambda: (s := adaptor.status(native_id)).state in FINAL_STATES and s, what="job end")
    assert status.state == State.Failed
    assert native_id in status.message
    state = wait_for(lambda: (s := pilot.get_state()).is_final and s, what="pilot end")
    assert state == State.Failed
    assert native_id in pilot.get_details()["reason"]
