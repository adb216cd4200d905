"""The agent, observed through the units it runs: slots, command lines, files, exit codes,
walltimes, cancel and drain (fork adaptor, embedded store)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pilot import ComputeDataService, PilotComputeService, State

from helpers import fork_pilot, pids_matching, wait_for


@pytest.fixture
def pcs() -> PilotComputeService:
    return PilotComputeService()


def _out(unit: object) -> str:
    return Path(unit.get_local_working_directory(), "stdout.txt").read_text()  # type: ignore[attr-defined]


def test_never_runs_more_units_than_slots(pcs: PilotComputeService, tmp_path: Path) -> None:
    pilot = fork_pilot(pcs, slots=2)
    log = tmp_path / "intervals"
    line = f"echo start $(date +%s.%N) >> {log}; sleep 0.4; echo end $(date +%s.%N) >> {log}"
    units = [pilot.submit_compute_unit({"executable": "/bin/sh", "arguments": ["-c", f"'{line}'"]})
             for _ in range(6)]
    pilot.wait(timeout=60)
    assert {u.get_state() for u in units} == {State.Done}
    events = sorted((float(t), kind) for kind, t in (row.split() for row in log.read_text().splitlines()))
    running = peak = 0
    for _, kind in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2


def test_command_line_goes_through_the_shell(pcs: PilotComputeService) -> None:
    pilot = fork_pilot(pcs)
    home = os.path.expanduser("~")
    desc = {"executable": "echo", "arguments": ["$GREETING", "~", "x*.txt", "''"],
            "environment": {"GREETING": "hello world"}}
    unit = pilot.submit_compute_unit(desc)
    assert unit.wait(timeout=30) == State.Done
    assert _out(unit) == f"hello world {home} x*.txt \n"
    empty = pilot.submit_compute_unit({"executable": "/bin/date", "arguments": [""]})
    assert empty.wait(timeout=30) == State.Done
    listed = pilot.submit_compute_unit({"executable": "/usr/bin/env", "environment": ["A=1", "B=two=2"]})
    assert listed.wait(timeout=30) == State.Done
    assert "A=1\n" in _out(listed) and "B=two=2\n" in _out(listed)


def test_files_working_directory_and_stdin(pcs: PilotComputeService, tmp_path: Path) -> None:
    pilot = fork_pilot(pcs)
    workdir = tmp_path / "mine" / "deep"
    workdir.mkdir(parents=True)
    (workdir / "in.txt").write_text("from stdin\n")
    unit = pilot.submit_compute_unit({
        "executable": "/bin/sh", "arguments": ["-c", "'cat; echo oops >&2; pwd'"],
        "working_directory": str(workdir), "input": "in.txt", "output": "o.log", "error": "e.log"})
    assert unit.wait(timeout=30) == State.Done
    assert (workdir / "o.log").read_text() == f"from stdin\n{workdir}\n"
    assert (workdir / "e.log").read_text() == "oops\n"
    created = tmp_path / "not" / "there"
    made = pilot.submit_compute_unit({"executable": "/bin/true", "working_directory": str(created)})
    assert made.wait(timeout=30) == State.Done
    assert created.is_dir()


def test_sandbox_respects_the_umask(pcs: PilotComputeService) -> None:
    old = os.umask(0o077)
    try:
        pilot = fork_pilot(pcs)
    finally:
        os.umask(old)
    unit = pilot.submit_compute_unit({"executable": "/bin/true"})
    unit.wait(timeout=30)
    mode = stat.S_IMODE(os.stat(unit.get_local_working_directory()).st_mode)
    assert mode & 0o077 == 0


def test_exit_codes_and_start_failures(pcs: PilotComputeService, tmp_path: Path) -> None:
    pilot = fork_pilot(pcs)
    missing = pilot.submit_compute_unit({"executable": "/no/such/program"})
    assert missing.wait(timeout=30) == State.Failed
    assert missing.get_exit_code() == 127
    assert "/no/such/program" in missing.get_details()["reason"]
    no_input = pilot.submit_compute_unit({"executable": "/bin/cat", "input": "absent.txt"})
    assert no_input.wait(timeout=30) == State.Failed
    assert "absent.txt" in no_input.get_details()["reason"]
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    unwritable = pilot.submit_compute_unit({"executable": "/bin/true", "working_directory": str(locked)})
    ok = pilot.submit_compute_unit({"executable": "/bin/true"})
    if os.geteuid() == 0:  # root writes anywhere; a file in place of the sandbox fails for everyone
        (tmp_path / "afile").write_text("")
        unwritable = pilot.submit_compute_unit({"executable": "/bin/true",
                                                "working_directory": str(tmp_path / "afile")})
    assert unwritable.wait(timeout=30) == State.Failed
    assert "sandbox" in unwritable.get_details()["reason"]
    assert ok.wait(timeout=30) == State.Done


def test_unit_walltime_kills_it(pcs: PilotComputeService) -> None:
    pilot = fork_pilot(pcs)
    unit = pilot.submit_compute_unit({"executable": "/bin/sleep", "arguments": ["3001"], "walltime": 0.02})
    assert unit.wait(timeout=30) == State.Failed
    assert "walltime" in unit.get_details()["reason"]
    assert pids_matching("sleep 3001") == []


def test_cancel_kills_the_units_whole_process_group(pcs: PilotComputeService) -> None:
    pilot = fork_pilot(pcs)
    unit = pilot.submit_compute_unit({"executable": "/bin/sh", "arguments": ["-c", "'sleep 3002 & sleep 3003'"]})
    wait_for(lambda: pids_matching("sleep 3002") and pids_matching("sleep 3003"), 20, "both sleeps")
    unit.cancel()
    assert unit.wait(timeout=30) == State.Canceled
    # its own two sleeps: "sleep 300" would also match the sleeps of tests running beside it (3004, 3005)
    wait_for(lambda: pids_matching("sleep 3002") == [] == pids_matching("sleep 3003"), 10, "the process group gone")
    assert pilot.get_state() == State.Running
    assert pilot.submit_compute_unit({"executable": "/bin/true"}).wait(timeout=30) == State.Done


def test_pilot_cancel_drains_and_leaves_no_process(pcs: PilotComputeService) -> None:
    pilot = fork_pilot(pcs, slots=2)
    assert pids_matching(pilot.id), "the agent carries its pilot id in its command line"
    units = [pilot.submit_compute_unit({"executable": "/bin/sleep", "arguments": ["3004"]}) for _ in range(3)]
    wait_for(lambda: len(pids_matching("sleep 3004")) == 2, 20, "two units running")
    pilot.cancel()
    assert pilot.get_state() == State.Canceled
    assert {u.get_state() for u in units} == {State.Canceled}
    assert pids_matching(pilot.id) == []
    assert pids_matching("sleep 3004") == []


def test_pilot_walltime_ends_it_done_and_hands_back_queued_units(pcs: PilotComputeService) -> None:
    short = fork_pilot(pcs, walltime=0.05)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    running = cds.submit_compute_unit({"executable": "/bin/sleep", "arguments": ["3005"]})
    queued = cds.submit_compute_unit({"executable": "/bin/true"})
    wait_for(lambda: running.get_state() == State.Running, 20, "unit running")
    wait_for(lambda: short.get_state().is_final, 30, "pilot walltime")
    assert short.get_state() == State.Done
    assert running.get_state() == State.Failed
    assert running.get_details()["reason"] == "pilot walltime reached"
    wait_for(lambda: pids_matching(short.id) == [] == pids_matching("sleep 3005"), 10, "the agent gone")
    fork_pilot(pcs)
    assert queued.wait(timeout=30) == State.Done


def test_mpi_unit_uses_the_mpi_launch_method(pcs: PilotComputeService, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "mpirun"
    fake.write_text('#!/bin/sh\n# a fake mpirun: prints its arguments and the host file\necho "$@"\ncat "$4"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    pilot = fork_pilot(pcs, slots=3)
    unit = pilot.submit_compute_unit({"executable": "/bin/hostname", "number_of_processes": 3,
                                      "spmd_variation": "mpi"})
    assert unit.wait(timeout=30) == State.Done
    lines = _out(unit).splitlines()
    assert lines[0].startswith("-np 3 -hostfile ") and lines[0].endswith("/bin/hostname")
    assert len(lines[1:]) == 3
