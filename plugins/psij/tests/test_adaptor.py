"""pilot-psij without a batch system: registration, the description -> PSI/J job mapping, the
state mapping, settings and the retry rule."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from psij import JobState, JobStatus

from pilot import PilotComputeService, PilotError, State
from pilot.descriptions import PilotComputeDescription
from pilot.plugin.manager import PluginManager
from pilot.plugin.types import PilotJobRequest
from pilot.testing.fixtures import PilotEnv
from pilot_psij.adaptor import PsijAdaptor, is_transient, native_status, poll_interval, retrying
from pilot_psij.jobspec import build_job, drain_margin


def request(tmp_path: Path, **desc: object) -> PilotJobRequest:
    description = PilotComputeDescription.from_dict({"service_url": "slurm://localhost", **desc})
    return PilotJobRequest("pilot-x", description, tmp_path / "pilot-x", ("/py", "-m", "pilot.agent", "--pilot",
                                                                          "pilot-x"), {"A": "1"}, ("module load x",))


def test_schemes_registered_through_the_entry_point() -> None:
    manager = PluginManager()
    for scheme in ("slurm", "pbs", "lsf", "flux", "cobalt"):
        assert manager.adaptor_for(scheme).name == f"psij-{scheme}"
    assert "psij" in manager.plugin_names()


def test_description_maps_onto_psij_job(tmp_path: Path) -> None:
    job = build_job(request(tmp_path, number_of_processes=8, processes_per_node=4, walltime=30, queue="q",
                            project="p", reservation="r", extra={"slurm.qos": "high", "exclusive_node_use": True}))
    spec = job.spec
    assert spec is not None
    assert spec.executable == "/py"
    assert spec.arguments == ["-m", "pilot.agent", "--pilot", "pilot-x", "--drain-margin", "90"]
    assert spec.directory == tmp_path / "pilot-x"
    assert spec.environment == {"A": "1"}
    assert spec.pre_launch == tmp_path / "pilot-x" / "pre_launch.sh"
    resources = spec.resources
    assert resources.computed_node_count == 2
    assert resources.computed_process_count == 8
    assert resources.exclusive_node_use is True
    attributes = spec.attributes
    assert attributes.duration == timedelta(minutes=30)
    assert (attributes.queue_name, attributes.account, attributes.reservation_id) == ("q", "p", "r")
    assert attributes.custom_attributes == {"slurm.qos": "high", "slurm.job-name": "pilot-x"}


def test_no_walltime_leaves_the_batch_default(tmp_path: Path) -> None:
    job = build_job(request(tmp_path))
    assert job.spec is not None
    assert job.spec.attributes.duration is None
    assert "--drain-margin" not in job.spec.arguments


def test_drain_margin_bounds() -> None:
    assert drain_margin(None, {}) is None
    assert drain_margin(0.1, {}) == 1.0
    assert drain_margin(600, {}) == 120.0
    assert drain_margin(10, {"drain_margin": 7}) == 7.0
    with pytest.raises(PilotError, match="drain_margin"):
        drain_margin(10, {"drain_margin": "soon"})


def test_unknown_extra_key_and_impossible_resources(tmp_path: Path) -> None:
    with pytest.raises(PilotError, match="unknown extra key 'qos'") as info:
        build_job(request(tmp_path, extra={"qos": "x"}))
    assert info.value.key == "qos"
    with pytest.raises(PilotError, match="integral multiple"):
        build_job(request(tmp_path, number_of_processes=5, processes_per_node=2))


@pytest.mark.parametrize(("psij", "state"), [(JobState.NEW, State.Unknown), (JobState.QUEUED, State.Pending),
                                             (JobState.ACTIVE, State.Running), (JobState.COMPLETED, State.Done),
                                             (JobState.CANCELED, State.Canceled), (JobState.FAILED, State.Failed)])
def test_state_mapping(psij: JobState, state: State) -> None:
    assert native_status(JobStatus(psij), "17").state == state


def test_failed_status_carries_the_batch_message() -> None:
    status = native_status(JobStatus(JobState.FAILED, message="The job exhausted its time limit."), "17")
    assert status.message == "batch job 17 failed: The job exhausted its time limit."
    assert "exited with code 3" in native_status(JobStatus(JobState.FAILED, exit_code=3), "17").message


def test_poll_interval_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PILOT_PSIJ_POLL_INTERVAL", raising=False)
    assert poll_interval("slurm://localhost") == 10.0
    monkeypatch.setenv("PILOT_PSIJ_POLL_INTERVAL", "2")
    assert poll_interval("slurm://localhost") == 2.0
    assert poll_interval("slurm://localhost?poll_interval=0.25") == 0.25
    with pytest.raises(PilotError, match="poll_interval"):
        poll_interval("slurm://localhost?poll_interval=-1")


def test_remote_host_is_refused() -> None:
    with pytest.raises(PilotError, match="slurm://localhost"):
        PsijAdaptor("slurm://cluster.example.org", "slurm")


def test_transient_and_permanent_failures() -> None:
    def failure(text: str) -> subprocess.CalledProcessError:
        return subprocess.CalledProcessError(1, ["sbatch"], output=text)

    assert is_transient(failure("sbatch: error: Socket timed out on send/recv operation"))
    assert not is_transient(failure("sbatch: error: invalid partition specified: x"))
    assert not is_transient(FileNotFoundError("sbatch"))
    calls = []

    def run(cmd: list[str]) -> str:
        calls.append(cmd)
        if len(calls) < 3:
            raise failure("slurm_load_jobs error: Unable to contact slurm controller")
        return "ok"

    assert retrying(run, attempts=4, wait_max=0.01)(["squeue"]) == "ok"
    assert len(calls) == 3


def test_flux_without_flux_fails_the_pilot_with_a_reason(pilot_env: PilotEnv) -> None:
    """psij-python ships a flux executor that needs Flux's Python bindings, absent here."""
    pytest.importorskip("psij")
    try:
        import flux  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("Flux is installed here")
    pilot = PilotComputeService().create_pilot({"service_url": "flux://", "working_directory": str(pilot_env.work)})
    assert pilot.get_state() == State.Failed
    assert "flux" in pilot.get_details()["reason"]
