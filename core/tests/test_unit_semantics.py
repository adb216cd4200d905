"""Unit semantics the contract promises (issue 11, item 12): command lines run as ``/bin/sh``
would run them, start failures explained in the error file, one file for output and error,
MPI host files that clobber nothing, data units units cannot tamper with, ``output_data``
patterns kept inside the sandbox, and cancel reaching processes that left the agent's session."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pilot import ComputeDataService, PilotComputeService, PilotDataService, State
from pilot.errors import PilotError

from helpers import fork_pilot, pids_matching, wait_for


@pytest.fixture
def pcs() -> PilotComputeService:
    return PilotComputeService()


def _file(unit: object, name: str = "stdout.txt") -> str:
    return Path(unit.get_local_working_directory(), name).read_text()  # type: ignore[attr-defined]


def test_script_without_shebang_runs_through_sh(pcs: PilotComputeService, tmp_path: Path) -> None:
    script = tmp_path / "noshebang"
    script.write_text('echo "ran with $1"\n')
    script.chmod(0o755)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "onpath").write_text("echo on path\n")
    (bindir / "onpath").chmod(0o755)
    pilot = fork_pilot(pcs)
    direct = pilot.submit_compute_unit({"executable": str(script), "arguments": ["x"]})
    relative = pilot.submit_compute_unit({"executable": "./noshebang", "arguments": ["y"],
                                          "working_directory": str(tmp_path)})
    searched = pilot.submit_compute_unit({"executable": "onpath",
                                          "environment": {"PATH": f"{bindir}:{os.environ['PATH']}"}})
    for unit in (direct, relative, searched):
        assert unit.wait(timeout=30) == State.Done, unit.get_details()["reason"]
    assert _file(direct) == "ran with x\n"
    assert (tmp_path / "stdout.txt").read_text() == "ran with y\n"
    assert _file(searched) == "on path\n"


def test_missing_executable_is_explained_in_the_error_file(pcs: PilotComputeService) -> None:
    pilot = fork_pilot(pcs)
    missing = pilot.submit_compute_unit({"executable": "nosuch-program-7411"})
    assert missing.wait(timeout=30) == State.Failed
    assert missing.get_exit_code() == 127
    assert "nosuch-program-7411" in _file(missing, "stderr.txt")
    assert "not found" in _file(missing, "stderr.txt")


def test_output_and_error_in_one_file_do_not_garble(pcs: PilotComputeService) -> None:
    pilot = fork_pilot(pcs)
    line = "for i in 1 2 3 4 5; do echo out-$i; echo err-$i >&2; done"
    units = [pilot.submit_compute_unit({"executable": line, "output": name, "error": other})
             for name, other in (("both.txt", "both.txt"), ("same.txt", "./same.txt"))]
    for unit, name in zip(units, ("both.txt", "same.txt"), strict=True):
        assert unit.wait(timeout=30) == State.Done, unit.get_details()["reason"]
        assert _file(unit, name).split() == [f"{kind}-{i}" for i in range(1, 6) for kind in ("out", "err")]


def test_mpi_host_file_never_clobbers_a_user_file(pcs: PilotComputeService, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "mpirun"
    fake.write_text('#!/bin/sh\necho "$4"\ncat "$4"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hostfile").write_text("the user's own\n")
    pilot = fork_pilot(pcs, slots=2)
    units = [pilot.submit_compute_unit({"executable": "/bin/true", "number_of_processes": 2, "spmd_variation": "mpi",
                                        "working_directory": str(shared), "output": f"out-{n}.txt"})
             for n in range(4)]
    host_files = set()
    for n, unit in enumerate(units):
        assert unit.wait(timeout=30) == State.Done, unit.get_details()["reason"]
        lines = (shared / f"out-{n}.txt").read_text().splitlines()
        assert len(lines) == 3
        host_files.add(lines[0])
    assert (shared / "hostfile").read_text() == "the user's own\n"
    assert len(host_files) == 4 and all(Path(p).parent == shared for p in host_files)


def test_a_unit_writing_into_its_input_does_not_change_the_data_unit(pcs: PilotComputeService,
                                                                     tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("original\n")
    pds = PilotDataService()
    pd = pds.create_pilot({"service_url": str(tmp_path / "pd")})
    inputs = pd.submit_data_unit({"file_urls": [str(tmp_path / "in.txt")]})
    fork_pilot(pcs)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    cds.add_pilot_data_service(pds)
    tamper = cds.submit_compute_unit({"executable": "echo", "arguments": ["tampered!", ">", "in.txt"],
                                      "input_data": [inputs.get_url()]})
    tamper.wait(timeout=60)  # Failed (EACCES through a read-only link) or Done (its own copy)
    reader = cds.submit_compute_unit({"executable": "cat", "arguments": ["in.txt"], "input_data": [inputs.get_url()]})
    assert reader.wait(timeout=60) == State.Done, reader.get_details()["reason"]
    assert _file(reader) == "original\n"
    replica = Path(inputs.list()["in.txt"]["pilot_data"][0].removeprefix("file://"))
    assert replica.read_text() == "original\n"


def test_output_data_patterns_must_stay_in_the_sandbox(pcs: PilotComputeService, tmp_path: Path) -> None:
    pd = PilotDataService().create_pilot({"service_url": str(tmp_path / "pd")})
    results = pd.submit_data_unit({"file_urls": []})
    pilot = fork_pilot(pcs)
    for pattern in ("/etc/passwd", "../*", "sub/../../x", "a/../../../etc/*"):
        with pytest.raises(PilotError) as info:
            pilot.submit_compute_unit({"executable": "true", "output_data": [{results.get_url(): [pattern]}]})
        assert info.value.key == "output_data" and pattern in str(info.value)


def test_output_data_does_not_follow_links_out_of_the_sandbox(pcs: PilotComputeService, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    pd = PilotDataService().create_pilot({"service_url": str(tmp_path / "pd")})
    results = pd.submit_data_unit({"file_urls": []})
    fork_pilot(pcs)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    unit = cds.submit_compute_unit({"executable": f"ln -s {tmp_path / 'secret.txt'} leak.txt && echo ok > ok.txt",
                                    "output_data": [{results.get_url(): ["*.txt"]}]})
    assert unit.wait(timeout=60) == State.Done, unit.get_details()["reason"]
    assert "leak.txt" not in results.list()
    assert "ok.txt" in results.list()


def test_cancel_reaches_setsid_children(pcs: PilotComputeService) -> None:
    pilot = fork_pilot(pcs, slots=2)
    gone = pilot.submit_compute_unit({"executable": "setsid sleep 7401 & exit 0"})
    stays = pilot.submit_compute_unit({"executable": "setsid sleep 7402 & sleep 7403"})
    wait_for(lambda: all(pids_matching(f"sleep {n}") for n in (7401, 7402, 7403)), 15, "the sleeps")
    assert gone.wait(timeout=30) == State.Done
    pilot.cancel()
    deadline = time.monotonic() + 15
    while pids_matching("sleep 740") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pids_matching("sleep 7401") == [] == pids_matching("sleep 7402") == pids_matching("sleep 7403")
    assert stays.get_state() in (State.Canceled, State.Failed)


@pytest.mark.parametrize("direct", [True, False], ids=["fork_exec", "Popen"])
def test_spawn_falls_back_to_sh_on_enoexec_on_both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         direct: bool) -> None:
    from pilot.agent import spawn

    monkeypatch.setattr(spawn, "_DIRECT", [direct and spawn._DIRECT[0]])
    (tmp_path / "noshebang").write_text('echo "got $1" > out.txt\n')
    (tmp_path / "noshebang").chmod(0o755)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        child = spawn.spawn(["./noshebang", "it"], str(tmp_path), -1, null, null, env=None)
        assert child.wait() == 0
    finally:
        os.close(null)
    assert (tmp_path / "out.txt").read_text() == "got it\n"
