"""Issue 11, item 6: nothing from a pilot description or a site file can end a ``#PBS``/``#BSUB``/
``#SBATCH`` directive line and run the rest as shell in the job. Descriptions refuse control
characters; pilot-psij checks again whatever reaches the job script (defence in depth), so a
request built by other means, or a site file's ``python``, is refused too."""

from __future__ import annotations

import dataclasses
import os
import stat
import types
from pathlib import Path
from typing import Any

import pytest

from pilot import PilotComputeService, PilotError, State
from pilot.descriptions import PilotComputeDescription
from pilot.plugin.types import PilotJobRequest
from pilot.testing import fake_batch
from pilot.testing.fixtures import PilotEnv
from pilot_psij.jobspec import build_job

MARK = "touch /tmp/pilot-injected"


@pytest.fixture
def fake(pilot_env: PilotEnv, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = pilot_env.root / "fake-batch"
    bin_dir = fake_batch.install(pilot_env.root / "fake-bin", state)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    monkeypatch.setenv("PILOT_PSIJ_POLL_INTERVAL", "0.2")
    return state


def scripts(state: Path) -> list[str]:
    return [job["script"] for job in fake_batch.jobs(state).values()] if state.exists() else []


FIELDS: list[tuple[str, dict[str, Any]]] = [
    ("queue", {"queue": f"debug\n{MARK}"}),
    ("project", {"project": f"p1\n{MARK}"}),
    ("reservation", {"reservation": f"r1\r\n{MARK}"}),
    ("working_directory", {"working_directory": f"/tmp/w\n{MARK}"}),
    ("extra", {"extra": {f"pbs.l\n{MARK}": "x"}}),
    ("extra", {"extra": {"pbs.l": f"x\n{MARK}"}}),
    ("extra", {"extra": {"lsf.R": [f"x\n{MARK}"]}}),
    ("extra", {"extra": {"lsf.R": {"a": f"x\n{MARK}"}}}),
    ("environment", {"environment": {"FOO": f"bar\n{MARK}"}}),
]


@pytest.mark.parametrize("scheme", ["pbs", "lsf", "slurm"])
@pytest.mark.parametrize(("key", "fields"), FIELDS)
def test_description_with_a_newline_is_refused(pilot_env: PilotEnv, fake: Path, scheme: str, key: str,
                                               fields: dict[str, Any]) -> None:
    pcs = PilotComputeService()
    with pytest.raises(PilotError) as info:
        pcs.create_pilot({"service_url": f"{scheme}://localhost", "working_directory": str(pilot_env.work),
                          **fields})
    assert info.value.key is not None and info.value.key.startswith(key)
    assert key in str(info.value)
    assert MARK not in "".join(scripts(fake))


def _bypassing(tmp_path: Path, **fields: Any) -> PilotJobRequest:
    """A request whose description skipped validation (as a plugin or a future code path might)."""
    valid = PilotComputeDescription.from_dict({"service_url": "pbs://localhost"})
    names = ("service_url", "queue", "project", "reservation", "walltime", "number_of_processes",
             "processes_per_node", "extra", "environment")
    description: Any = types.SimpleNamespace(**{name: getattr(valid, name) for name in names})
    for name, value in fields.items():
        setattr(description, name, value)
    return PilotJobRequest("pilot-x", description, tmp_path / "pilot-x",
                           ("/py", "-m", "pilot.agent", "--pilot", "pilot-x"), {"A": "1"})


@pytest.mark.parametrize("executor", ["pbs", "lsf", "slurm"])
@pytest.mark.parametrize(("key", "fields"), [
    ("queue", {"queue": f"q\n{MARK}"}), ("project", {"project": f"p\n{MARK}"}),
    ("reservation", {"reservation": f"r\n{MARK}"}),
    ("extra", {"extra": {"pbs.l": f"x\n{MARK}"}}), ("extra", {"extra": {f"pbs.l\n{MARK}": "x"}}),
])
def test_unvalidated_fields_are_refused_by_pilot_psij(tmp_path: Path, executor: str, key: str,
                                                      fields: dict[str, Any]) -> None:
    with pytest.raises(PilotError) as info:
        build_job(_bypassing(tmp_path, **fields), executor)
    assert info.value.key is not None and info.value.key.startswith(key)


def test_request_environment_sandbox_and_argv_are_checked(tmp_path: Path) -> None:
    good = _bypassing(tmp_path)
    cases = [
        ("environment['A']", dataclasses.replace(good, environment={"A": f"secret\n{MARK}"})),
        ("working_directory", dataclasses.replace(good, sandbox=tmp_path / f"w\n{MARK}")),
        ("python", dataclasses.replace(good, agent_argv=(f"/py\n{MARK}", "-m", "pilot.agent"))),
    ]
    for key, request in cases:
        with pytest.raises(PilotError) as info:
            build_job(request, "lsf")
        assert info.value.key == key
        assert "secret" not in str(info.value)  # an environment value is never shown


def _site_file(path: Path, body: str) -> Path:
    path.write_text(f'[resources.cluster]\nservice_url = "pbs://localhost"\n{body}\n')
    return path


@pytest.mark.parametrize(("key", "body"), [
    ("queue", 'queue = "debug\\ntouch /tmp/pilot-injected"'),
    ("project", 'project = "p\\ntouch /tmp/pilot-injected"'),
    ("reservation", 'reservation = "r\\ntouch /tmp/pilot-injected"'),
    ("working_directory", 'working_directory = "/tmp/w\\ntouch /tmp/pilot-injected"'),
    ("extra", '[resources.cluster.extra]\n"pbs.l" = "x\\ntouch /tmp/pilot-injected"'),
    ("environment", '[resources.cluster.environment]\nFOO = "x\\ntouch /tmp/pilot-injected"'),
])
def test_site_file_value_with_a_newline_is_refused(pilot_env: PilotEnv, fake: Path, monkeypatch: pytest.MonkeyPatch,
                                                   key: str, body: str) -> None:
    monkeypatch.setenv("PILOT_SITE_CONFIG", str(_site_file(pilot_env.root / "resources.toml", body)))
    given = {} if key == "working_directory" else {"working_directory": str(pilot_env.work)}
    with pytest.raises(PilotError) as info:
        PilotComputeService().create_pilot({"resource": "cluster", **given})
    assert info.value.key is not None and info.value.key.startswith(key)
    assert MARK not in "".join(scripts(fake))


def test_site_python_with_a_newline_never_reaches_the_job_script(pilot_env: PilotEnv, fake: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The site's ``python`` is the agent's executable in the job script: checked by pilot-psij."""
    site = _site_file(pilot_env.root / "resources.toml", f'python = "/usr/bin/python3\\n{MARK}"')
    monkeypatch.setenv("PILOT_SITE_CONFIG", str(site))
    pilot = PilotComputeService().create_pilot({"resource": "cluster", "working_directory": str(pilot_env.work)})
    assert pilot.get_state() == State.Failed
    assert "python" in pilot.get_details()["reason"]
    assert MARK not in "".join(scripts(fake))


@pytest.mark.parametrize("scheme", ["pbs", "lsf"])
def test_generated_script_has_no_injected_line(pilot_env: PilotEnv, fake: Path, scheme: str) -> None:
    """Odd but legal values (quotes, spaces, ``$``, ``;``) stay inside their directive line."""
    pilot = PilotComputeService().create_pilot({
        "service_url": f"{scheme}://localhost", "working_directory": str(pilot_env.work), "queue": "debug",
        "project": "p1; touch /tmp/x", "environment": {"FOO": "a'b $(touch /tmp/x); c"}})
    script = fake_batch.jobs(fake)[pilot.get_details()["native_id"]]["script"]
    prefix = "#PBS" if scheme == "pbs" else "#BSUB"
    for line in script.splitlines():
        if "touch /tmp/x" in line:
            assert line.startswith((prefix, "export FOO=")), line
    pilot.cancel()


@pytest.mark.parametrize("scheme", ["pbs", "lsf"])
def test_job_scripts_are_private(pilot_env: PilotEnv, fake: Path, scheme: str) -> None:
    """The job scripts hold environment values: PSI/J's directory for them is 0700."""
    pilot = PilotComputeService().create_pilot({
        "service_url": f"{scheme}://localhost", "working_directory": str(pilot_env.work),
        "environment": {"TOKEN": "s3cret"}})
    work = Path(os.environ["PILOT_HOME"]) / "psij" / scheme
    assert stat.S_IMODE(work.stat().st_mode) == 0o700
    assert any("s3cret" in p.read_text() for p in work.glob("*.job"))
    pilot.cancel()
