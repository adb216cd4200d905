"""PilotData on Globus collections end to end, against the FAKE Globus services of
``pilot_globus.testing`` (Globus cannot be reached from the test machines): DataUnits stored,
replicated between local and Globus PilotData and back, and staged into and out of units run
by a real fork pilot whose agent reaches the fake services itself."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from pilot import ComputeDataService, PilotComputeService, PilotDataService, State
from pilot.testing.fixtures import PilotEnv

from globus_helpers import Site


def _files(directory: Path, count: int, size: int = 300) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        path = directory / f"f{n:04d}.dat"
        path.write_bytes(os.urandom(size + n))
        paths.append(str(path))
    return paths


def _digests(paths: list[str] | list[Path]) -> dict[str, str]:
    return {Path(p).name: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def test_a_data_unit_replicated_local_to_globus_and_back_arrives_identical(pilot_env: PilotEnv, site: Site,
                                                                            tmp_path: Path) -> None:
    sources = _files(tmp_path / "src", 20)
    pds = PilotDataService()
    local_pd = pds.create_pilot({"service_url": str(tmp_path / "local-pd")})
    globus_pd = pds.create_pilot({"service_url": f"globus://{site.a}/pd-{uuid.uuid4().hex[:8]}"})
    back_pd = pds.create_pilot({"service_url": str(tmp_path / "back-pd")})
    du = local_pd.submit_data_unit({"file_urls": sources})
    assert du.wait(timeout=60) == State.Running
    du.add_pilot_data(globus_pd)
    du.wait(timeout=60)
    on_globus = sorted(p for p in (site.a_root).rglob("*.dat"))
    assert _digests(on_globus) == _digests(sources)
    site.fake.reset_calls()
    du.add_pilot_data(back_pd)
    du.wait(timeout=60)
    assert set(du.get_details()["replicas"].values()) == {"Running"}
    local_copies = sorted((tmp_path / "back-pd").rglob("*.dat"))
    assert _digests(local_copies) == _digests(sources)
    exported = du.export(tmp_path / "exported")
    assert _digests(exported) == _digests(sources)


def test_replicating_between_two_globus_pilot_data_is_one_transfer_task(pilot_env: PilotEnv, site: Site,
                                                                        tmp_path: Path) -> None:
    sources = _files(tmp_path / "src", 50)
    pds = PilotDataService()
    first = pds.create_pilot({"service_url": f"globus://{site.a}/first"})
    second = pds.create_pilot({"service_url": "globus://b/second"})
    du = first.submit_data_unit({"file_urls": sources})
    assert du.wait(timeout=60) == State.Running
    site.fake.reset_calls()
    tasks_before = set(site.fake.tasks)
    du.add_pilot_data(second)
    du.wait(timeout=60)
    new_tasks = [site.fake.tasks[t] for t in set(site.fake.tasks) - tasks_before]
    assert [(t["type"], t["status"], t["files"]) for t in new_tasks] == [("TRANSFER", "SUCCEEDED", 50)]
    assert new_tasks[0]["verify_checksum"] is True
    calls = site.fake.transfer_calls()
    assert len(calls) <= 10, calls
    assert _digests(sorted(site.b_root.rglob("*.dat"))) == _digests(sources)


def test_units_stage_inputs_from_and_outputs_to_a_globus_pilot_data(pilot_env: PilotEnv, site: Site,
                                                                   tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("pear\napple\nfig\n")
    pds = PilotDataService()
    pd = pds.create_pilot({"service_url": f"globus://{site.a}/staging"})
    inputs = pd.submit_data_unit({"file_urls": [str(words)]})
    results = pd.submit_data_unit({"file_urls": []})
    assert inputs.wait(timeout=60) == State.Running
    assert inputs.list()["words.txt"]["pilot_data"][0].startswith("globus://")
    pcs = PilotComputeService()
    pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 2,
                      "working_directory": str(pilot_env.work)})
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    cds.add_pilot_data_service(pds)
    units = cds.submit_compute_units([{"executable": "sort", "arguments": ["words.txt", ">", f"sorted-{n}.out"],
                                       "input_data": [inputs.get_url()],
                                       "output_data": [{results.get_url(): ["*.out"]}]} for n in range(3)])
    cds.wait(timeout=120)
    for unit in units:
        assert unit.get_state() == State.Done, unit.get_details()["reason"]
        assert Path(unit.get_local_working_directory(), "words.txt").read_text() == "pear\napple\nfig\n"
    assert sorted(results.list()) == [f"sorted-{n}.out" for n in range(3)]
    assert {p.read_text() for p in site.a_root.rglob("sorted-*.out")} == {"apple\nfig\npear\n"}
    exported = results.export(tmp_path / "results")
    assert {Path(p).read_text() for p in exported} == {"apple\nfig\npear\n"}
    cds.cancel()
    pd.cancel(remove_data=True)
    assert not list(site.a_root.rglob("*.out"))
