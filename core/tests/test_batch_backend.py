"""Backends with the optional batch methods (``BatchDataBackend``) get a whole DataUnit per call:
replication between two of their places, storing local files and fetching them; a batch answer
that does not match what was expected fails like a single transfer, and a fetched file takes its
name only once verified. Plugin site sections and plugin commands of the ``pilot`` command."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from pilot import PilotDataService, PilotError, State
from pilot.data import transfer
from pilot.data.local import LocalBackend
from pilot.plugin import hookimpl
from pilot.plugin.manager import PluginManager
from pilot.plugin.types import DataBackendRecord, FileInfo
from pilot.session import Session


def _local(url: str) -> str:
    return "file://" + url[len("batchfs://"):]


class BatchFS:
    """``batchfs:///path``: the local backend, plus batch methods that count their calls."""

    def __init__(self) -> None:
        self.inner = LocalBackend()
        self.batches: list[tuple[str, int]] = []
        self.corrupt = False

    def create_place(self, url: str, options: Mapping[str, Any]) -> None:
        self.inner.create_place(_local(url), options)

    def put(self, local_path: str, url: str, options: Mapping[str, Any]) -> FileInfo:
        return self.inner.put(local_path, _local(url), options)

    def get(self, url: str, local_path: str, options: Mapping[str, Any]) -> FileInfo:
        return self.inner.get(_local(url), local_path, options)

    def list(self, url: str, options: Mapping[str, Any]) -> list[FileInfo]:
        return self.inner.list(_local(url), options)

    def stat(self, url: str, options: Mapping[str, Any]) -> FileInfo:
        return self.inner.stat(_local(url), options)

    def remove(self, url: str, options: Mapping[str, Any]) -> None:
        self.inner.remove(_local(url), options)

    def copy(self, src_url: str, dst_url: str, options: Mapping[str, Any]) -> FileInfo:
        return self.inner.copy(_local(src_url), _local(dst_url), options)

    def local_path(self, url: str) -> str | None:
        return None  # as if remote: the core must move its files through the backend

    def close(self) -> None:
        self.inner.close()

    def copy_many(self, pairs: Sequence[tuple[str, str]], options: Mapping[str, Any]) -> list[FileInfo]:
        self.batches.append(("copy", len(pairs)))
        return [self.copy(s, d, options) for s, d in pairs]

    def put_many(self, pairs: Sequence[tuple[str, str]], options: Mapping[str, Any]) -> list[FileInfo]:
        self.batches.append(("put", len(pairs)))
        return [self.put(p, u, options) for p, u in pairs]

    def get_many(self, pairs: Sequence[tuple[str, str]], options: Mapping[str, Any]) -> list[FileInfo]:
        self.batches.append(("get", len(pairs)))
        got = [self.get(u, p, options) for u, p in pairs]
        if self.corrupt:
            Path(pairs[-1][1]).write_bytes(b"x")
            got[-1] = FileInfo(got[-1].name, 1)
        return got


@pytest.fixture
def batchfs(pilot_env: Any, monkeypatch: pytest.MonkeyPatch) -> BatchFS:
    backend = BatchFS()

    class Plugin:
        @hookimpl
        def pilot_data_backends(self) -> list[DataBackendRecord]:
            return [DataBackendRecord("batchfs", ("batchfs",), lambda: backend)]

    import pilot.session as session_module

    session = Session(PluginManager(extra_plugins={"batchfs": Plugin()}))
    monkeypatch.setattr(session_module, "_default", session)
    return backend


def _sources(tmp_path: Path, count: int) -> list[str]:
    paths = []
    for n in range(count):
        path = tmp_path / "src" / f"f{n}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(os.urandom(100 + n))
        paths.append(str(path))
    return paths


def test_a_data_unit_moves_in_one_batch_each_way(batchfs: BatchFS, tmp_path: Path) -> None:
    pds = PilotDataService()
    first = pds.create_pilot({"service_url": f"batchfs://{tmp_path}/one"})
    second = pds.create_pilot({"service_url": f"batchfs://{tmp_path}/two"})
    local = pds.create_pilot({"service_url": str(tmp_path / "local")})
    sources = _sources(tmp_path, 12)
    du = first.submit_data_unit({"file_urls": sources})
    assert du.wait(timeout=30) == State.Running
    du.add_pilot_data(second)
    du.wait(timeout=30)
    du.add_pilot_data(local)
    du.wait(timeout=30)
    assert set(du.get_details()["replicas"].values()) == {"Running"}
    exported = du.export(tmp_path / "out")
    assert batchfs.batches == [("put", 12), ("copy", 12), ("get", 12)]
    assert sorted(Path(p).read_bytes() for p in exported) == sorted(Path(p).read_bytes() for p in sources)


def test_a_batch_fetch_that_does_not_verify_leaves_no_file(batchfs: BatchFS, tmp_path: Path) -> None:
    pd = PilotDataService().create_pilot({"service_url": f"batchfs://{tmp_path}/one"})
    du = pd.submit_data_unit({"file_urls": _sources(tmp_path, 3)})
    assert du.wait(timeout=30) == State.Running
    batchfs.corrupt = True
    with pytest.raises(PilotError, match="size mismatch"):
        du.export(tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == []  # neither final names nor temporary ones


def test_a_single_fetch_that_does_not_verify_leaves_no_file(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"12345")
    session = Session()
    with pytest.raises(PilotError, match="size mismatch"):
        transfer.get(session, str(tmp_path / "d" / "a"), str(tmp_path / "d" / "b"), {}, FileInfo("a", 4))
    assert sorted(os.listdir(tmp_path / "d")) == ["a"]
    session.close()


def test_a_plugin_table_in_a_site_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pilot import site

    monkeypatch.setattr(site, "plugin_sections", lambda: frozenset({"myplug"}))
    system, user = tmp_path / "system.toml", tmp_path / "user.toml"
    system.write_text('[myplug]\nlevel = 1\nname = "sys"\n[myplug.things.a]\nx = 1\n')
    user.write_text('[myplug]\nlevel = 2\n[myplug.things.a]\ny = 2\n[resources.r]\nservice_url = "fork://localhost"\n')
    table, sources = site.load_section("myplug", [system, user])
    assert table == {"level": 2, "name": "sys", "things": {"a": {"x": 1, "y": 2}}}
    assert sources == (str(system), str(user))
    assert site.section_line(str(user), "myplug.things.a", "y") == 4
    user.write_text("[myplgu]\nlevel = 2\n")
    with pytest.raises(PilotError, match=r"line 1: myplgu: unknown top-level key.*did you mean 'myplug'"):
        site.load_section("myplug", [system, user])


def main(argv: list[str]) -> int:
    """A plugin command for the test below."""
    print("hello from a plugin:", *argv)
    return 3


def test_a_plugin_adds_a_pilot_command(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from pilot import cli

    entry = EntryPoint(name="hello", value=f"{__name__}:main", group=cli.COMMANDS_GROUP)
    monkeypatch.setattr(cli, "plugin_commands", lambda: {"hello": entry})
    assert cli.main(["hello", "a", "--b"]) == 3
    assert capsys.readouterr().out == "hello from a plugin: a --b\n"
    done = subprocess.run([sys.executable, "-m", "pilot.cli", "--help"], capture_output=True, text=True, check=True)
    assert "new-plugin" in done.stdout
