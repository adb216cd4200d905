"""BigJob's ``ssh://localhost/path`` and ``ssh:///path`` name files on this machine: in a unit's
and a pilot's ``file_transfer`` (both ways) and in a DataUnit's ``file_urls``. No SSH server and
no SFTP backend is involved; ``ssh://otherhost/path`` still goes to the ``ssh`` data backend."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from pilot import PilotComputeService, PilotDataService, PilotError, State
from pilot.data.records import local_alias
from pilot.plugin.manager import PluginManager
from pilot.session import Session

from helpers import fork_pilot


@pytest.mark.parametrize(("url", "path"), [
    ("ssh://localhost/tmp/a.txt", "/tmp/a.txt"),
    ("ssh:///tmp/a.txt", "/tmp/a.txt"),
    ("SSH://LocalHost/tmp/with%20space", "/tmp/with space"),
    ("ssh://127.0.0.1/tmp/d/", "/tmp/d/"),
    (f"ssh://{socket.gethostname()}/tmp/a", "/tmp/a"),
    ("ssh://localhost/~/x.dat", os.path.expanduser("~/x.dat")),
])
def test_ssh_urls_of_this_machine_are_local_paths(url: str, path: str) -> None:
    assert local_alias(url) == path


@pytest.mark.parametrize("url", [
    "ssh://otherhost/tmp/a.txt",         # another host: SFTP
    "ssh://me@localhost/tmp/a.txt",      # a login as someone: SFTP
    "ssh://localhost:2222/tmp/a.txt",    # another port: SFTP (the test sshd)
    "sftp://localhost/tmp/a.txt",        # sftp:// stays SFTP
    "file:///tmp/a.txt", "/tmp/a.txt", "rel/a.txt",
    "ssh://localhost",                   # no path
])
def test_other_urls_are_left_alone(url: str) -> None:
    assert local_alias(url) == url


def test_file_transfer_with_ssh_localhost_both_ways(tmp_path: Path) -> None:
    (tmp_path / "conf.ini").write_text("[x]\n")
    (tmp_path / "shared.dat").write_text("shared")
    outdir = tmp_path / "collected"
    outdir.mkdir()
    pcs = PilotComputeService()
    pilot = fork_pilot(pcs, 1, file_transfer=[f"ssh://localhost{tmp_path}/shared.dat > BIGJOB_WORK_DIR"])
    unit = pilot.submit_compute_unit({
        "executable": "cat", "arguments": ["conf.ini", "../shared.dat", ">", "all.txt"],
        "working_directory": "u1",
        "file_transfer": [f"ssh://{tmp_path}/conf.ini > SUBJOB_WORK_DIR",  # ssh:///abs/path
                          f"SUBJOB_WORK_DIR/all.txt > ssh://localhost{outdir}/",
                          f"SUBJOB_WORK_DIR/all.txt > ssh://{outdir}/renamed.txt"]})
    assert unit.wait(timeout=60) == State.Done, unit.get_details()["reason"]
    assert (outdir / "all.txt").read_text() == "[x]\nshared"
    assert (outdir / "renamed.txt").read_text() == "[x]\nshared"


def test_a_missing_ssh_localhost_file_fails_the_unit_naming_it(tmp_path: Path) -> None:
    pilot = fork_pilot(PilotComputeService(), 1)
    unit = pilot.submit_compute_unit({"executable": "/bin/true",
                                      "file_transfer": [f"ssh://localhost{tmp_path}/missing.bin > SUBJOB_WORK_DIR"]})
    assert unit.wait(timeout=60) == State.Failed
    reason = unit.get_details()["reason"]
    assert "missing.bin" in reason and "no such file" in reason


def test_data_unit_file_urls_with_ssh_localhost(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("bb")
    pd = PilotDataService().create_pilot({"service_url": str(tmp_path / "pd")})
    (tmp_path / "c.txt").write_text("ccc")
    du = pd.submit_data_unit({"file_urls": [f"ssh://localhost{tmp_path}/a.txt", f"ssh://{tmp_path}/b.txt"]})
    assert du.wait(timeout=30) == State.Running
    du.add_files([f"ssh://localhost{tmp_path}/c.txt"])
    files = du.list()
    assert sorted(files) == ["a.txt", "b.txt", "c.txt"]
    exported = du.export(tmp_path / "out")
    assert sorted(Path(p).read_text() for p in exported) == ["a", "bb", "ccc"]
    with pytest.raises(PilotError, match="missing"):
        pd.submit_data_unit({"file_urls": [f"ssh://localhost{tmp_path}/missing"]})


def test_ssh_other_host_still_goes_to_the_ssh_backend(tmp_path: Path) -> None:
    """Without a plugin for ``ssh`` data, another host is an unknown scheme, not a local path."""
    session = Session(PluginManager(blocked={"sftp"}))
    try:
        pd = PilotDataService(session=session).create_pilot({"service_url": str(tmp_path / "pd")})
        with pytest.raises(PilotError, match="ssh"):
            pd.submit_data_unit({"file_urls": ["ssh://elsewhere.example.org/tmp/a.txt"]})
    finally:
        session.close()
