"""Site configuration (``pilot.site``): named resources in TOML, resolved by ``create_pilot``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pilot import PilotComputeService, PilotError, State
from pilot.descriptions import PilotComputeDescription
from pilot.site import config_paths, load_resources, resolve_pilot
from pilot.testing.fixtures import PilotEnv

SYSTEM = """
# written by the site admins
[resources.cluster]
service_url = "slurm://localhost"
queue = "batch"
project = "site-default"
processes_per_node = 4
walltime = 30
python = "/opt/py/bin/python3"
pre_commands = ["module load python"]
environment = { SITE = "1" }
"""
USER = """
[resources.cluster]
project = "my-project"
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def describe(**keys: object) -> PilotComputeDescription:
    return PilotComputeDescription.from_dict(keys)


def test_default_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PILOT_SITE_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", "/x/config")
    assert config_paths() == [Path("/etc/pilot/resources.toml"), Path("/x/config/pilot/resources.toml")]
    monkeypatch.setenv("PILOT_SITE_CONFIG", "/a.toml:/b.toml")
    assert config_paths() == [Path("/a.toml"), Path("/b.toml")]


def test_user_file_overrides_system_file_key_by_key(tmp_path: Path) -> None:
    paths = [write(tmp_path / "system.toml", SYSTEM), write(tmp_path / "user.toml", USER), tmp_path / "absent.toml"]
    site = load_resources(paths)["cluster"]
    assert site.defaults["project"] == "my-project"
    assert site.defaults["queue"] == "batch"
    assert site.python == "/opt/py/bin/python3"
    assert site.pre_commands == ("module load python",)


def test_description_names_a_resource(tmp_path: Path) -> None:
    paths = [write(tmp_path / "system.toml", SYSTEM)]
    resolved = resolve_pilot(describe(resource="cluster", number_of_processes=8, walltime=5,
                                      environment={"MINE": "2"}), paths)
    desc = resolved.description
    assert desc.service_url == "slurm://localhost"
    assert (desc.queue, desc.project, desc.processes_per_node) == ("batch", "site-default", 4)
    assert desc.walltime == 5  # the description wins over the site default
    assert dict(desc.environment) == {"SITE": "1", "MINE": "2"}
    assert resolved.python == "/opt/py/bin/python3"
    assert resolved.pre_commands == ("module load python",)


def test_without_resource_nothing_is_read(tmp_path: Path) -> None:
    resolved = resolve_pilot(describe(service_url="fork://localhost"), [write(tmp_path / "bad.toml", "[[[")])
    assert resolved.python == sys.executable
    assert resolved.pre_commands == ()


def test_unknown_resource(tmp_path: Path) -> None:
    with pytest.raises(PilotError, match=r"no site resource 'other' \(defined: cluster") as info:
        resolve_pilot(describe(resource="other"), [write(tmp_path / "s.toml", SYSTEM)])
    assert info.value.key == "resource"


@pytest.mark.parametrize(("text", "line", "key", "words"), [
    ("[resources.c]\nservice_url = 'slurm://localhost'\nqeue = 'x'\n", 3, "qeue", "did you mean 'queue'"),
    ("[resources.c]\nservice_url = 'slurm://localhost'\n\nwalltime = 'long'\n", 4, "walltime", "positive number"),
    ("[resources.c]\npre_commands = 'module load x'\n", 2, "pre_commands", "list of strings"),
    ("[resource.c]\nservice_url = 'x'\n", 1, "resource", "unknown top-level key"),
])
def test_bad_file_names_file_line_and_key(tmp_path: Path, text: str, line: int, key: str, words: str) -> None:
    path = write(tmp_path / "site.toml", text)
    with pytest.raises(PilotError) as info:
        load_resources([path])
    message = str(info.value)
    assert message.startswith(f"{path}: line {line}: ")
    assert key in message
    assert words in message


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "site.toml", "[resources.c]\nservice_url = 'x'\nqueue = \n")
    with pytest.raises(PilotError, match=rf"^{path}: line 3: not valid TOML"):
        load_resources([path])


def test_create_pilot_uses_the_site_python(pilot_env: PilotEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork resource whose python is a wrapper: the agent is started by that wrapper."""
    marker = pilot_env.root / "wrapper-used"
    wrapper = write(pilot_env.root / "python-wrapper", f"#!/bin/sh\ntouch '{marker}'\nexec '{sys.executable}' \"$@\"\n")
    wrapper.chmod(0o755)
    config = write(pilot_env.root / "site.toml", f"[resources.here]\nservice_url = 'fork://localhost'\n"
                                                f"python = '{wrapper}'\nwalltime = 5\n")
    monkeypatch.setenv("PILOT_SITE_CONFIG", str(config))
    pilot = PilotComputeService().create_pilot({"resource": "here", "working_directory": str(pilot_env.work)})
    unit = pilot.submit_compute_unit({"executable": "/bin/true"})
    assert unit.wait(timeout=30) == State.Done
    assert marker.exists()
    details = pilot.get_details()
    assert details["service_url"] == "fork://localhost"
    assert details["description"]["resource"] == "here"
    assert details["description"]["walltime"] == 5
    pilot.cancel()


def test_bad_site_file_fails_create_pilot(pilot_env: PilotEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(pilot_env.root / "site.toml", "[resources.here]\nservice_url = 'fork://localhost'\npyhton = 'x'\n")
    monkeypatch.setenv("PILOT_SITE_CONFIG", str(config))
    with pytest.raises(PilotError, match=rf"{config}: line 3: resources.here.pyhton: unknown key; did you mean"):
        PilotComputeService().create_pilot({"resource": "here"})
