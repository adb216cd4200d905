"""BigJob's names and return values (issue 10, points 4 and 5): the CDS aliases, ``id``/``url``
on every object, ``PilotError.value``, the less used BigJob methods, and lists whose items
compare equal to, and hash like, their URL strings."""

from __future__ import annotations

from pathlib import Path

import pytest

import pilot
from pilot import (
    ComputeDataService,
    ComputeUnit,
    DataUnit,
    PilotCompute,
    PilotComputeService,
    PilotData,
    PilotDataService,
    PilotError,
    State,
)

from helpers import fork_pilot


def _file(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_the_bigjob_compute_data_services_are_compute_data_service() -> None:
    from pilot import ComputeDataServiceCentral, ComputeDataServiceDecentral

    assert ComputeDataServiceDecentral is ComputeDataService
    assert ComputeDataServiceCentral is ComputeDataService
    assert {"ComputeDataServiceCentral", "ComputeDataServiceDecentral"} <= set(dir(pilot))
    assert isinstance(pilot.ComputeDataServiceDecentral(), ComputeDataService)


def test_pilot_error_value_is_its_message() -> None:
    err = PilotError("no such pilot", key="pilot_url")
    assert err.value == str(err) == "no such pilot"
    with pytest.raises(PilotError) as info:
        PilotCompute(pilot_url="not a url")
    assert info.value.value == str(info.value)


def test_every_object_has_id_and_url(tmp_path: Path) -> None:
    pcs = PilotComputeService()
    pc = fork_pilot(pcs)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    cu = cds.submit_compute_unit({"executable": "/bin/true"})
    pds = PilotDataService()
    pd = pds.create_pilot({"service_url": str(tmp_path / "pd")})
    du = pd.submit_data_unit({"file_urls": []})
    for obj in (pcs, pc, cu, cds, pds, pd, du):
        assert obj.id == obj.get_id() and obj.id in obj.url, obj
        assert obj.url == obj.get_url(), obj
    assert cds.get_id().startswith("cds-")
    cds.wait(timeout=60)
    du.wait(timeout=30)


def test_bigjob_methods_of_compute_objects() -> None:
    pcs = PilotComputeService()
    pc = fork_pilot(pcs, slots=2)
    cu = pc.submit_compute_unit({"executable": "/bin/true"})
    assert cu.get_subjob() is cu
    assert pcs.pilot_computes == [pc] == [pc.get_url()]
    desc = pc.pilot_compute_description
    assert desc["service_url"] == "fork://localhost" and desc["number_of_processes"] == 2
    desc["number_of_processes"] = 99  # a copy: the pilot does not change
    assert pc.pilot_compute_description["number_of_processes"] == 2
    assert cu.wait(timeout=30) == State.Done


def test_lists_compare_and_hash_like_their_urls(tmp_path: Path) -> None:
    pcs = PilotComputeService()
    pc = fork_pilot(pcs)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    pds = PilotDataService()
    cds.add_pilot_data_service(pds)
    pd = pds.create_pilot({"service_url": str(tmp_path / "pd")})
    du = cds.submit_data_unit({"file_urls": [_file(tmp_path / "in" / "a.txt", "alpha")]})
    cu = cds.submit_compute_unit({"executable": "/bin/true"})
    cds.wait(timeout=60)

    assert du.get_url() in pd.list_data_units()           # BigJob returned URLs here
    assert pd.get_url() in du.list_pilot_data()
    assert pd.get_url() in pds.list_pilots() and pd.get_url() in cds.list_pilot_data()
    assert pc.get_url() in pcs.list_pilots()
    assert cu.get_url() in cds.list_compute_units() and cu.get_url() in pc.list_compute_units()
    assert du.get_url() in cds.list_data_units()
    assert du.get_url() in set(pd.list_data_units())       # hashes like its URL
    assert {cu.get_url(): 1}[cds.list_compute_units()[0]] == 1

    again = DataUnit(du_url=du.get_url())
    assert again == du and hash(again) == hash(du) == hash(du.get_url())
    assert len({du, again, du.get_url()}) == 1
    assert du != du.id and du != pd and du != 1
    assert cds == ComputeDataService(cds_url=cds.get_url()) == cds.get_url()
    assert pcs == PilotComputeService(pcs_url=pcs.get_url()) and pds == PilotDataService(pds_url=pds.get_url())
    assert ComputeUnit(cu_url=cu.get_url()) in [cu]
    assert PilotCompute(pilot_url=pc.get_url()) != cu


def test_lookups_answer_none_for_what_they_do_not_hold(tmp_path: Path) -> None:
    pds = PilotDataService()
    pd, other = (pds.create_pilot({"service_url": str(tmp_path / name)}) for name in ("pd", "other"))
    du = pd.submit_data_unit({"file_urls": []})
    stranger = other.submit_data_unit({"file_urls": []})
    assert pd.get_du(du.get_url()) == du and pd.get_du(du.id) == du
    assert pd.get_du(stranger.get_url()) is None and pd.get_du("du-unknown") is None
    assert pds.get_pilot(pd.get_url()) == pd and pds.get_pilot(other.id) == other
    assert PilotDataService().get_pilot(pd.get_url()) is None
    assert pds.get_pilot("pd-unknown") is None

    cds = ComputeDataService()
    cds.add_pilot_data_service(pds)
    mine = cds.submit_data_unit({"file_urls": []})
    assert cds.get_data_unit(mine.get_url()) == mine and cds.get_data_unit(mine.id) == mine
    assert cds.get_data_unit(du.get_url()) is None  # stored in its PilotData, but not submitted here
    assert cds.list_data_units() == [mine]
    assert sorted(cds.list_pilot_data(), key=str) == sorted([pd.get_url(), other.get_url()])
    with pytest.raises(PilotError, match="not a data-unit URL"):
        pd.get_du(pd.get_url())
    for unit in (du, stranger, mine):
        unit.wait(timeout=30)  # no transfer outlives the test's store


def test_add_pilot_data_replicates_bigjob_style(tmp_path: Path) -> None:
    pds = PilotDataService()
    first, second = (pds.create_pilot({"service_url": str(tmp_path / name)}) for name in ("one", "two"))
    du = first.submit_data_unit({"file_urls": [_file(tmp_path / "in" / "b.txt", "beta")]})
    assert du.wait(timeout=30) == State.Running
    assert du.get_pilot_data() == [first.get_url()]
    du.add_pilot_data(second)
    du.wait(timeout=30)
    assert sorted(du.get_pilot_data(), key=str) == sorted([first.get_url(), second.get_url()])
    assert du.get_url() in second.list_data_units()
    replicas = du.list()["b.txt"]["pilot_data"]
    assert len(replicas) == 2
    assert all(Path(u.removeprefix("file://")).read_text() == "beta" for u in replicas)
    assert isinstance(du.get_pilot_data()[0], PilotData)
