"""``pilot pilots|units|services|data`` run as a user runs them: a subprocess against a store
holding real fork pilots and units made through the API (the ``pilot_env`` store, found through
``PILOT_HOME``, or given with ``--store``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pilot import ComputeDataService, PilotComputeService
from pilot.data.objects import PilotDataService
from pilot.states import State
from pilot.testing.fixtures import PilotEnv


def pilot_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m pilot.cli ARGS`` in this environment (``PILOT_HOME`` is the test's)."""
    return subprocess.run([sys.executable, "-m", "pilot.cli", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def json_of(*args: str) -> Any:
    done = pilot_cli(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def script(path: Path, text: str) -> str:
    """An executable shell script (arguments are joined into a shell command line)."""
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def workload(pilot_env: PilotEnv) -> dict[str, Any]:
    """One running fork pilot of 2 slots; a unit that fails, one that prints, both final."""
    failing_script = script(pilot_env.root / "failing.sh", "echo to-stderr >&2\nexit 7\n")
    pcs = PilotComputeService()
    pilot = pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 2})
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    failing, printing = cds.submit_compute_units([
        {"executable": failing_script, "name": "failing"},
        {"executable": "/bin/echo", "arguments": ["hello", "from", "a", "unit"], "name": "printing"}])
    cds.wait()
    return {"pcs": pcs, "pilot": pilot, "cds": cds, "failing": failing, "printing": printing}


def test_pilots_ls_and_show_find_the_running_pilot(workload: dict[str, Any]) -> None:
    pilot = workload["pilot"]
    listed = json_of("pilots", "ls")
    assert [(p["url"], p["state"], p["slots"], p["in_use"]) for p in listed] == [(pilot.get_url(), "Running", 2, 0)]
    table = pilot_cli("pilots", "ls")
    assert table.returncode == 0 and pilot.id in table.stdout and "Running" in table.stdout
    assert "─" not in table.stdout and "\x1b[" not in table.stdout  # no box drawing, no colour into a pipe
    shown = json_of("pilots", "show", pilot.get_url())
    assert shown["id"] == pilot.id and shown["service_url"] == "fork://localhost"
    assert shown["units"] == {"Done": 1, "Failed": 1}


def test_python_dash_m_pilot_is_the_pilot_command(workload: dict[str, Any]) -> None:
    """Where the ``pilot`` script is not on PATH, ``python -m pilot`` runs the same command."""
    done = subprocess.run([sys.executable, "-m", "pilot", "units", "ls", "--json"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert sorted(u["state"] for u in json.loads(done.stdout)) == ["Done", "Failed"]
    usage = subprocess.run([sys.executable, "-m", "pilot", "no-such-command"], capture_output=True, text=True,
                           timeout=60, check=False)
    assert usage.returncode == 2 and "pilot" in usage.stderr


def test_units_ls_state_failed_lists_failures_with_their_reasons(workload: dict[str, Any]) -> None:
    failed = json_of("units", "ls", "--state", "Failed")
    assert [(u["id"], u["exit_code"], u["reason"]) for u in failed] == [(workload["failing"].id, 7, "exit code 7")]
    table = pilot_cli("units", "ls", "--state", "failed").stdout
    assert workload["failing"].id in table and "exit code 7" in table
    assert workload["printing"].id not in table
    by_pilot = json_of("units", "ls", "--pilot", workload["pilot"].get_url())
    assert {u["name"] for u in by_pilot} == {"failing", "printing"}
    shown = json_of("units", "show", workload["printing"].get_url())
    assert shown["state"] == "Done" and shown["arguments"] == ["hello", "from", "a", "unit"]


def test_units_logs_prints_stdout_and_stderr(workload: dict[str, Any]) -> None:
    assert pilot_cli("units", "logs", workload["printing"].get_url()).stdout == "hello from a unit\n"
    assert pilot_cli("units", "logs", "--stderr", workload["failing"].id).stdout == "to-stderr\n"


def test_units_logs_follow_prints_until_the_unit_is_final(workload: dict[str, Any], tmp_path: Path) -> None:
    slow = script(tmp_path / "slow.sh", "for i in 1 2 3; do echo line $i; sleep 0.3; done\n")
    unit = workload["cds"].submit_compute_unit({"executable": slow})
    followed = pilot_cli("units", "logs", "--follow", unit.get_url())
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == "line 1\nline 2\nline 3\n"
    assert unit.get_state() is State.Done


def test_wait_exit_codes_say_how_it_ended(workload: dict[str, Any]) -> None:
    assert pilot_cli("units", "wait", workload["printing"].get_url()).returncode == 0
    failed = pilot_cli("units", "wait", workload["failing"].get_url())
    assert failed.returncode == 3 and "Failed: exit code 7" in failed.stdout
    slow = workload["cds"].submit_compute_unit({"executable": "/bin/sleep", "arguments": ["30"]})
    timed_out = pilot_cli("units", "wait", slow.get_url(), "--timeout", "0.5")
    assert timed_out.returncode == 124
    canceled = pilot_cli("units", "cancel", slow.get_url())
    assert canceled.returncode == 0 and slow.id in canceled.stdout
    assert pilot_cli("units", "wait", slow.get_url()).returncode == 3
    pilot = workload["pilot"]
    assert pilot_cli("pilots", "wait", pilot.get_url(), "--timeout", "20").returncode == 0
    assert pilot_cli("pilots", "cancel", pilot.get_url()).returncode == 0
    assert pilot.get_state() is State.Canceled
    assert pilot_cli("pilots", "wait", pilot.get_url()).returncode == 3


def test_services_and_data_ls_and_show(workload: dict[str, Any], tmp_path: Path) -> None:
    pds = PilotDataService()
    workload["cds"].add_pilot_data_service(pds)
    pd = pds.create_pilot({"service_url": str(tmp_path / "pd")})
    source = tmp_path / "a.txt"
    source.write_text("data\n")
    du = workload["cds"].submit_data_unit({"file_urls": [str(source)], "name": "inputs"})
    du.wait()
    services = {s["kind"]: s for s in json_of("services", "ls")}
    assert set(services) == {"pcs", "cds", "pds"}
    assert services["cds"]["units"] == {"Done": 1, "Failed": 1}
    shown = json_of("services", "show", workload["cds"].get_url())
    assert shown["compute_units"] == {"Done": 1, "Failed": 1} and pd.get_url() in shown["pilot_data"]
    assert json_of("services", "show", workload["pcs"].get_url())["pilots"] == [workload["pilot"].get_url()]
    data = {d["id"]: d for d in json_of("data", "ls")}
    assert data[pd.id]["kind"] == "pilot-data" and data[du.id]["files"] == 1 and data[du.id]["size"] == 5
    assert json_of("data", "show", du.get_url())["files"] == ["a.txt"]
    assert json_of("data", "show", pd.get_url())["data_units"] == [du.get_url()]


def test_a_pilot_data_service_on_its_own_is_listed(pilot_env: PilotEnv, tmp_path: Path) -> None:
    pds = PilotDataService()
    pd = pds.create_pilot({"service_url": str(tmp_path / "alone")})
    assert [s["id"] for s in json_of("services", "ls")] == [pds.id]
    assert [d["id"] for d in json_of("data", "ls")] == [pd.id]


def test_the_store_option_and_errors(workload: dict[str, Any], pilot_env: PilotEnv, tmp_path: Path) -> None:
    other = pilot_cli("--store", f"sqlite://{tmp_path}/none.sqlite", "pilots", "ls")
    assert other.returncode == 1 and other.stderr.startswith("pilot: error: no coordination store")
    assert "Traceback" not in other.stderr and len(other.stderr.splitlines()) == 1
    given = pilot_cli("--store", pilot_env.store_url, "units", "ls", "--json")
    assert len(json.loads(given.stdout)) == 2
    missing = pilot_cli("units", "show", workload["printing"].get_url().replace(workload["printing"].id, "cu-0"))
    assert missing.returncode == 1 and "no compute unit cu-0" in missing.stderr
    wrong_kind = pilot_cli("units", "show", workload["pilot"].get_url())
    assert wrong_kind.returncode == 1 and "is a pilot URL" in wrong_kind.stderr
    assert pilot_cli("units", "ls", "--state", "Sleeping").returncode == 2
    assert pilot_cli("no-such-command").returncode == 2
