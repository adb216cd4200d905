"""PilotDataService, PilotData and DataUnit on the local backend: create, submit, replicate,
add files, list, export, states, reconnect from another process, size, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pilot import DataUnit, PilotData, PilotDataService, PilotError, State
from pilot.plugin.manager import PluginManager


def _files(root: Path, **contents: str) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in contents.items():
        (root / name).write_text(text)
    return [str(root / name) for name in contents]


def test_the_local_backend_is_registered_through_the_hook() -> None:
    manager = PluginManager(entry_points=False)
    records = list(manager.data_backends.values())
    assert [(r.name, r.schemes) for r in records] == [("local", ("file",))]
    assert manager.data_backend_for("file").name == "local"


def test_submit_list_export_and_details(tmp_path: Path) -> None:
    pd = PilotDataService().create_pilot({"service_url": str(tmp_path / "store")})
    a, b = _files(tmp_path / "in", **{"a.txt": "alpha", "b.txt": "beta!"})
    du = pd.submit_data_unit({"file_urls": [a, f"file://{b}"], "name": "inputs"})
    assert du.wait(timeout=30) == State.Running
    listing = du.list()
    assert sorted(listing) == ["a.txt", "b.txt"]
    assert listing["a.txt"]["local"] == a
    assert Path(listing["b.txt"]["pilot_data"][0].removeprefix("file://")).read_text() == "beta!"
    details = du.get_details()
    assert details["files"] == ["a.txt", "b.txt"] and details["size"] == 10 and details["reason"] is None
    assert details["pilot_data"] == [pd.get_url()]
    out = du.export(tmp_path / "out")
    assert sorted(Path(p).read_text() for p in out) == ["alpha", "beta!"]
    assert [d.id for d in pd.list_data_units()] == [du.id]
    assert pd.get_du(du.get_url()).id == du.id
    assert pd.get_details()["used"] == 10


def test_an_empty_data_unit_collects_files_later(tmp_path: Path) -> None:
    pd = PilotDataService().create_pilot({"service_url": f"file://{tmp_path}/store"})
    du = pd.submit_data_unit({"file_urls": []})
    assert du.wait(timeout=30) == State.Running
    assert du.list() == {}
    (c,) = _files(tmp_path / "more", **{"c.dat": "gamma"})
    assert du.add_files([c]) == ["c.dat"]
    assert list(du.list()) == ["c.dat"]


def test_replicate_into_a_second_pilot_data_and_add_files_to_both(tmp_path: Path) -> None:
    pds = PilotDataService()
    pd1 = pds.create_pilot({"service_url": str(tmp_path / "one"), "affinity_datacenter_label": "east"})
    pd2 = pds.create_pilot({"service_url": str(tmp_path / "two"), "affinity_datacenter_label": "west"})
    du = pd1.submit_data_unit({"file_urls": _files(tmp_path / "in", **{"x": "x" * 100})})
    du.wait(timeout=30)
    again = pd2.submit_data_unit(data_unit=du)
    assert again.id == du.id
    assert du.wait(timeout=30) == State.Running
    assert {p.id for p in du.list_pilot_data()} == {pd1.id, pd2.id}
    assert len(du.list()["x"]["pilot_data"]) == 2
    du.add_files(_files(tmp_path / "later", **{"y": "why"}))
    for replica in du.list()["y"]["pilot_data"]:
        assert Path(replica.removeprefix("file://")).read_text() == "why"
    assert [d.id for d in pd2.list_data_units()] == [du.id]


def test_reconnect_by_url_from_another_process(tmp_path: Path) -> None:
    pd = PilotDataService().create_pilot({"service_url": str(tmp_path / "store")})
    du = pd.submit_data_unit({"file_urls": _files(tmp_path / "in", **{"r.txt": "remote"})})
    du.wait(timeout=30)
    code = ("import json, sys; from pilot import DataUnit, PilotData\n"
            "du = DataUnit(du_url=sys.argv[1]); pd = PilotData(pd_url=sys.argv[2])\n"
            "out = du.export(sys.argv[3])\n"
            "print(json.dumps([str(du.get_state()), sorted(du.list()), [d.id for d in pd.list_data_units()], out]))")
    done = subprocess.run([sys.executable, "-c", code, du.get_url(), pd.get_url(), str(tmp_path / "exp")],
                          capture_output=True, text=True, check=True, timeout=60)
    state, names, units, out = json.loads(done.stdout)
    assert (state, names, units) == ("Running", ["r.txt"], [du.id])
    assert Path(out[0]).read_text() == "remote"
    assert DataUnit(du_url=du.get_url()).get_state() == State.Running
    assert PilotData(pd_url=pd.get_url()).get_details()["place"].endswith(pd.id)


def test_a_missing_source_file_raises_with_its_path(tmp_path: Path) -> None:
    pd = PilotDataService().create_pilot({"service_url": str(tmp_path / "store")})
    missing = str(tmp_path / "no-such-file.txt")
    with pytest.raises(PilotError, match=r"no-such-file\.txt") as info:
        pd.submit_data_unit({"file_urls": [missing]})
    assert info.value.key == "file_urls"
    assert pd.list_data_units() == []


def test_an_unknown_scheme_raises() -> None:
    with pytest.raises(PilotError, match="no data backend for scheme 'gopher'") as info:
        PilotDataService().create_pilot({"service_url": "gopher://example.org/data"})
    assert info.value.key == "service_url"


def test_size_is_enforced(tmp_path: Path) -> None:
    pd = PilotDataService().create_pilot({"service_url": str(tmp_path / "store"), "size": 0.001})  # 1000 bytes
    big = tmp_path / "big"
    big.write_bytes(b"b" * 1500)
    with pytest.raises(PilotError, match="full") as info:
        pd.submit_data_unit({"file_urls": [str(big)]})
    assert info.value.key == "size"
    small = pd.submit_data_unit({"file_urls": _files(tmp_path / "s", **{"s": "s" * 600})})
    small.wait(timeout=30)
    with pytest.raises(PilotError, match="full"):
        small.add_files(_files(tmp_path / "t", **{"t": "t" * 600}))


def test_two_files_with_one_name_are_refused(tmp_path: Path) -> None:
    pd = PilotDataService().create_pilot({"service_url": str(tmp_path / "store")})
    one = _files(tmp_path / "1", **{"same": "1"})
    two = _files(tmp_path / "2", **{"same": "2"})
    with pytest.raises(PilotError, match="two files named 'same'"):
        pd.submit_data_unit({"file_urls": one + two})


def test_a_failed_store_fails_the_data_unit_with_the_reason(tmp_path: Path) -> None:
    pd = PilotDataService().create_pilot({"service_url": str(tmp_path / "store")})
    (src,) = _files(tmp_path / "in", **{"f": "data"})
    place = Path(pd.get_details()["place"].removeprefix("file://"))
    place.chmod(0o500)  # the DU directory cannot be created
    try:
        du = pd.submit_data_unit({"file_urls": [src]})
        state = du.wait(timeout=30)
    finally:
        place.chmod(0o700)
    if os.geteuid() == 0:  # root writes anywhere: nothing fails
        assert state == State.Running
        return
    assert state == State.Failed
    assert "storing in PilotData" in du.get_details()["reason"]


def test_release_and_cancel(tmp_path: Path) -> None:
    pds = PilotDataService()
    pd = pds.create_pilot({"service_url": str(tmp_path / "store")})
    du = pd.submit_data_unit({"file_urls": _files(tmp_path / "in", **{"k": "keep"})})
    du.wait(timeout=30)
    du.cancel()
    assert du.get_state() == State.Done
    assert du.list()["k"]["pilot_data"]  # released, data kept
    pds.cancel()
    assert pd.get_state() == State.Canceled
    with pytest.raises(PilotError, match="takes no more data"):
        pd.submit_data_unit({"file_urls": []})
    pd.cancel(remove_data=True)
    assert not Path(pd.get_details()["place"].removeprefix("file://")).exists()
