"""``pilot config``, ``pilot plugins``, ``--help`` on every command, and the generated
reference ``docs/cli.md`` kept current."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from pilot.cli import COMMANDS, cli
from pilot.cli.reference import render

REPO = Path(__file__).resolve().parents[2]


def pilot_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pilot.cli", *args], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, **(env or {})})


def test_a_good_site_file_passes(tmp_path: Path) -> None:
    site = tmp_path / "resources.toml"
    site.write_text(f'[resources.here]\nservice_url = "fork://localhost"\npython = "{sys.executable}"\n'
                    f'working_directory = "{tmp_path}"\n')
    done = pilot_cli("config", "check", str(site))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"ok: 1 resources in {site}\n"
    listed = json.loads(pilot_cli("config", "resources", "--json", env={"PILOT_SITE_CONFIG": str(site)}).stdout)
    assert listed == [{"name": "here", "service_url": "fork://localhost", "sources": [str(site)],
                       "files": str(site)}]


def test_a_bad_site_file_names_file_line_and_key(tmp_path: Path) -> None:
    site = tmp_path / "resources.toml"
    site.write_text('[resources.a]\nservice_url = "fork://localhost"\n\n[resources.b]\nqueue = "x"\nwaltime = 3\n')
    done = pilot_cli("config", "check", str(site))
    assert done.returncode == 1
    assert done.stderr.startswith(f"{site}: line 6: resources.b.waltime: unknown key; did you mean 'walltime'?")


def test_schemes_paths_and_credentials_are_checked(tmp_path: Path) -> None:
    key = tmp_path / "id_key"
    key.write_text("secret")
    key.chmod(0o644)
    site = tmp_path / "resources.toml"
    site.write_text('[resources.far]\nservice_url = "nosuch://host"\npython = "/no/python"\n'
                    f'working_directory = "/no/dir"\n\n[resources.far.extra]\nssh_key_file = "{key}"\n')
    done = pilot_cli("config", "check", str(site), "--json")
    assert done.returncode == 1
    problems = json.loads(done.stdout)["problems"]
    assert problems[0].startswith(f"{site}: line 2: resources.far.service_url: no resource adaptor for scheme "
                                  "'nosuch'")
    assert problems[1].startswith(f"{site}: line 3: resources.far.python: /no/python")
    assert problems[2].startswith(f"{site}: line 4: resources.far.working_directory: /no/dir")
    assert f"ssh_key_file: {key} is readable or writable by others" in problems[3]
    key.chmod(0o600)
    site.chmod(0o666)
    problems = json.loads(pilot_cli("config", "check", str(site), "--json").stdout)["problems"]
    assert problems[0].startswith(f"{site}: writable by others")
    assert not any("ssh_key_file" in p for p in problems)
    assert pilot_cli("config", "check", str(tmp_path / "missing.toml")).returncode == 1


def test_plugins_lists_what_each_plugin_registers_and_its_hooks() -> None:
    done = pilot_cli("plugins")
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert "fork" in lines["resource adaptors"].split(", ")
    assert lines["hooks of fork"] == "pilot_resource_adaptors"
    assert lines["hooks of placement"] == "pilot_place_unit"
    doc = json.loads(pilot_cli("plugins", "--json").stdout)
    assert doc["hooks"]["sqlite"] == ["pilot_coordination_stores"]


def _command_paths(command: click.Command, path: tuple[str, ...]) -> list[tuple[str, ...]]:
    found = [path]
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and (command is not cli or name in COMMANDS) and name != "bench":
                found += _command_paths(sub, (*path, name))
    return found


@pytest.mark.parametrize("path", _command_paths(cli, ()), ids=lambda p: " ".join(p) or "pilot")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    done = pilot_cli(*path, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: pilot {' '.join(path)}".rstrip())


def test_bench_and_plugin_commands_pass_help_through() -> None:
    bench = pilot_cli("bench", "--help")
    assert bench.returncode == 0 and "--pilots" in bench.stdout  # pilot.bench's own help


def test_the_reference_is_current() -> None:
    current = (REPO / "docs" / "cli.md").read_text()
    assert render() == current, "docs/cli.md is stale: run python -m pilot.cli.reference > docs/cli.md"


def test_version_prints_the_package_version() -> None:
    import pilot

    done = pilot_cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"pilot {pilot.version}"


def test_a_first_look_with_no_store_yet_says_so_and_names_the_options(tmp_path: Path) -> None:
    done = pilot_cli("status", env={"PILOT_HOME": str(tmp_path / "home"), "PILOT_COORDINATION_URL": ""})
    assert done.returncode == 1
    assert "nothing here yet" in done.stderr and "--store" in done.stderr and "PILOT_COORDINATION_URL" in done.stderr
    assert not (tmp_path / "home" / "store.sqlite").exists()  # looking creates nothing
    typo = pilot_cli("--store", f"sqlite://{tmp_path}/typo.db", "status")
    assert typo.returncode == 1 and "no coordination store" in typo.stderr and "check the URL" in typo.stderr


def test_an_object_url_of_no_known_kind_shows_the_form_expected() -> None:
    done = pilot_cli("units", "show", "sqlite:///x#du/abc")
    assert done.returncode == 1
    assert "not a unit URL" in done.stderr and "#unit/<id>" in done.stderr and "du URL" not in done.stderr
    other = pilot_cli("units", "show", "sqlite:///x#data-unit/du-abc")
    assert other.returncode == 1 and "is a data-unit URL, not a unit URL" in other.stderr
