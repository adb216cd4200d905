"""``number_of_replicas`` (BigJob's key, on DataUnit and PilotData descriptions): how many
PilotData hold a replica of a new data unit."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilot import ComputeDataService, PilotDataService, PilotError, State


@pytest.fixture
def source(tmp_path: Path) -> str:
    path = tmp_path / "a.txt"
    path.write_text("data\n")
    return str(path)


def _pds(tmp_path: Path, count: int, **extra: object) -> tuple[PilotDataService, list[object]]:
    pds = PilotDataService()
    return pds, [pds.create_pilot({"service_url": str(tmp_path / f"pd{n}"), **extra}) for n in range(count)]


def test_a_data_unit_asking_for_two_replicas_is_stored_twice(tmp_path: Path, source: str) -> None:
    _, (pd1, pd2, _pd3) = _pds(tmp_path, 3)
    du = pd1.submit_data_unit({"file_urls": [source], "number_of_replicas": 2})  # type: ignore[attr-defined]
    assert du.wait(timeout=30) == State.Running
    for pd in (pd1, pd2):
        pd.wait(timeout=30)  # type: ignore[attr-defined]
    replicas = du.get_details()["replicas"]
    assert len(replicas) == 2 and set(replicas.values()) == {"Running"}
    assert pd1.id in replicas  # type: ignore[attr-defined]
    assert sorted(p.read_text() for p in tmp_path.glob("pd*/*/du-*/a.txt")) == ["data\n", "data\n"]


def test_a_compute_data_service_places_every_replica(tmp_path: Path, source: str) -> None:
    pds, _ = _pds(tmp_path, 2, number_of_replicas=2)
    cds = ComputeDataService()
    cds.add_pilot_data_service(pds)
    du = cds.submit_data_unit({"file_urls": [source]})  # the PilotData's number_of_replicas applies
    cds.wait(timeout=30)
    for pd in du.list_pilot_data():
        pd.wait(timeout=30)
    assert sorted(du.get_details()["replicas"].values()) == ["Running", "Running"]
    assert len(du.list_pilot_data()) == 2


def test_more_replicas_than_pilot_data_is_refused_before_anything_is_stored(tmp_path: Path, source: str) -> None:
    _, (pd1, _pd2) = _pds(tmp_path, 2)
    with pytest.raises(PilotError, match="number_of_replicas is 3 but only 2"):
        pd1.submit_data_unit({"file_urls": [source], "number_of_replicas": 3})  # type: ignore[attr-defined]
    assert pd1.list_data_units() == []  # type: ignore[attr-defined]
