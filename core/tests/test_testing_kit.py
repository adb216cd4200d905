"""The published test kit (``pilot.testing``) is clean: it names none of this repository's
paths, hosts' ports or users, and finds services only through ``PILOT_TEST_*`` variables."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import pilot.testing

KIT = Path(pilot.testing.__file__).parent
#: What only this repository's tests/infra knows: its scripts, state directories, ports, user.
REPOSITORY_DETAILS = re.compile(r"tests/infra|/tmp/ci-|ci-sshd|ci-redis|ciuser|\b2222\b|\b6390\b|services\.sh")


def test_the_kit_names_no_path_or_port_of_this_repository() -> None:
    offenders = [f"{path.relative_to(KIT)}:{number}: {line.strip()}"
                 for path in sorted(KIT.rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if REPOSITORY_DETAILS.search(line)]
    assert offenders == []


@pytest.mark.parametrize("variable", ["PILOT_TEST_SSHD_DIR", "PILOT_TEST_SSHD_PORT", "PILOT_TEST_REDIS_PORT"])
def test_a_service_without_its_variable_is_skipped_by_name_and_fails_under_ci(variable: str, tmp_path: Path) -> None:
    """A plugin's test asking for the sshd or redis without the variable set: skipped with the
    variable's name on a laptop, failed under ``CI=true``."""
    test = tmp_path / "test_needs_service.py"
    test.write_text("from pilot.testing.services import redis_options, sshd_options\n"
                    "def test_needs_it():\n"
                    f"    {'redis_options' if 'REDIS' in variable else 'sshd_options'}()\n")
    env = {"PATH": "/usr/bin:/bin", "PILOT_TEST_SSHD_DIR": str(tmp_path), "PILOT_TEST_SSHD_PORT": "1",
           "PILOT_TEST_SSHD_USER": "u", "PILOT_TEST_REDIS_PORT": "1",
           "PILOT_TEST_REDIS_PASSWORD_FILE": str(tmp_path / "pw")}
    env[variable] = ""
    run = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q", "--rootdir", str(tmp_path), str(test)]
    laptop = subprocess.run(run, capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert laptop.returncode == 0 and "1 skipped" in laptop.stdout, laptop.stdout
    assert f"{variable} is not set" in laptop.stdout
    ci = subprocess.run(run, capture_output=True, text=True, env={**env, "CI": "true"}, cwd=tmp_path, check=False)
    assert ci.returncode == 1 and "CI=true: " in ci.stdout and f"{variable} is not set" in ci.stdout, ci.stdout
