"""Staging for units on fork pilots with local PilotData: input_data linked into the sandbox,
output_data added to DUs, file_transfer both ways, failures with reasons, and placement beside
the data through the pilot_place_unit hook."""

from __future__ import annotations

import os
from pathlib import Path

from pilot import ComputeDataService, PilotComputeService, PilotDataService, State
from pilot.plugin import hookimpl
from pilot.plugin.manager import PluginManager
from pilot.session import Session

from helpers import fork_pilot


def _service(slots: int = 2, **labels: str) -> tuple[ComputeDataService, PilotComputeService]:
    pcs = PilotComputeService()
    fork_pilot(pcs, slots, **labels)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    return cds, pcs


def test_input_data_is_linked_in_and_output_data_collected(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("3\n1\n2\n")
    pds = PilotDataService()
    pd = pds.create_pilot({"service_url": str(tmp_path / "pd")})
    inputs = pd.submit_data_unit({"file_urls": [str(tmp_path / "in.txt")]})
    results = pd.submit_data_unit({"file_urls": []})
    cds, _ = _service()
    cds.add_pilot_data_service(pds)
    unit = cds.submit_compute_unit({
        "executable": "sort", "arguments": ["in.txt", ">", "sorted.out"], "input_data": [inputs.get_url()],
        "output_data": [{results.get_url(): ["*.out"]}]})
    assert unit.wait(timeout=60) == State.Done, unit.get_details()["reason"]
    sandbox = Path(unit.get_local_working_directory())
    replica = Path(inputs.list()["in.txt"]["pilot_data"][0].removeprefix("file://"))
    linked = os.stat(sandbox / "in.txt").st_ino == replica.stat().st_ino
    assert linked == (os.geteuid() != 0)  # linked (read-only) unless root, whom modes do not stop
    assert not linked or replica.stat().st_mode & 0o222 == 0
    assert (sandbox / "sorted.out").read_text() == "1\n2\n3\n"  # still in the sandbox
    assert list(results.list()) == ["sorted.out"]
    assert results.export(tmp_path / "exp") == [str(tmp_path / "exp" / "sorted.out")]
    assert (tmp_path / "exp" / "sorted.out").read_text() == "1\n2\n3\n"


def test_many_units_add_outputs_to_one_data_unit(tmp_path: Path) -> None:
    pd = PilotDataService().create_pilot({"service_url": str(tmp_path / "pd")})
    results = pd.submit_data_unit({"file_urls": []})
    cds, _ = _service()
    units = cds.submit_compute_units([{"executable": "echo", "arguments": [n, ">", f"out-{n}.txt"],
                                       "output_data": [{results.get_url(): ["out-*.txt"]}]} for n in range(8)])
    cds.wait(timeout=60)
    assert all(u.get_state() == State.Done for u in units)
    assert sorted(results.list()) == [f"out-{n}.txt" for n in range(8)]


def test_file_transfer_into_unit_and_pilot_sandboxes_and_out(tmp_path: Path) -> None:
    (tmp_path / "conf.ini").write_text("[x]\n")
    (tmp_path / "shared.dat").write_text("shared")
    outdir = tmp_path / "collected"
    outdir.mkdir()
    pcs = PilotComputeService()
    pilot = fork_pilot(pcs, 1, file_transfer=[f"{tmp_path}/shared.dat > BIGJOB_WORK_DIR"])
    unit = pilot.submit_compute_unit({
        "executable": "cat", "arguments": ["conf.ini", "../shared.dat", "../pilot.dat", ">", "all.txt"],
        "working_directory": "u1",
        "file_transfer": [f"file://{tmp_path}/conf.ini > SUBJOB_WORK_DIR",
                          f"{tmp_path}/shared.dat > BIGJOB_WORK_DIR/pilot.dat",
                          f"SUBJOB_WORK_DIR/all.txt > {outdir}/"]})
    assert unit.wait(timeout=60) == State.Done, unit.get_details()["reason"]
    assert (outdir / "all.txt").read_text() == "[x]\nsharedshared"
    assert (Path(pilot.get_details()["sandbox"]) / "shared.dat").read_text() == "shared"


def test_a_failed_transfer_fails_the_unit_with_the_reason(tmp_path: Path) -> None:
    cds, _ = _service(1)
    unit = cds.submit_compute_unit({"executable": "/bin/true",
                                    "file_transfer": [f"{tmp_path}/missing.bin > SUBJOB_WORK_DIR"]})
    assert unit.wait(timeout=60) == State.Failed
    reason = unit.get_details()["reason"]
    assert "input staging failed" in reason and "missing.bin" in reason
    out = cds.submit_compute_unit({"executable": "/bin/true", "file_transfer": ["SUBJOB_WORK_DIR/none.txt > /tmp/"]})
    assert out.wait(timeout=60) == State.Failed
    assert "output staging failed" in out.get_details()["reason"]
    assert out.get_exit_code() == 0


def test_a_failing_unit_adds_no_output(tmp_path: Path) -> None:
    pd = PilotDataService().create_pilot({"service_url": str(tmp_path / "pd")})
    results = pd.submit_data_unit({"file_urls": []})
    cds, _ = _service(1)
    unit = cds.submit_compute_unit({"executable": "touch r.out; exit 3", "output_data": [{results.get_url(): ["*"]}]})
    assert unit.wait(timeout=60) == State.Failed
    assert results.list() == {}


def test_a_unit_whose_input_can_never_be_stored_fails(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("f")
    pd = PilotDataService().create_pilot({"service_url": str(tmp_path / "pd")})
    du = pd.submit_data_unit({"file_urls": [str(tmp_path / "f")]})
    du.wait(timeout=30)
    du.cancel()
    cds, _ = _service(1)
    unit = cds.submit_compute_unit({"executable": "/bin/true", "input_data": [du.get_url()]})
    assert unit.wait(timeout=60) == State.Failed
    assert f"input data unit {du.id} is Done" in unit.get_details()["reason"]


def test_units_run_beside_their_data(tmp_path: Path) -> None:
    pcs = PilotComputeService()
    east = fork_pilot(pcs, 2, affinity_datacenter_label="east", affinity_machine_label="e1")
    west = fork_pilot(pcs, 2, affinity_datacenter_label="west", affinity_machine_label="w1")
    pds = PilotDataService()
    pd_east = pds.create_pilot({"service_url": str(tmp_path / "east"), "affinity_datacenter_label": "east",
                                "affinity_machine_label": "e1"})
    pd_west = pds.create_pilot({"service_url": str(tmp_path / "west"), "affinity_datacenter_label": "west",
                                "affinity_machine_label": "w1"})
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    cds.add_pilot_data_service(pds)
    (tmp_path / "e.txt").write_text("east data")
    (tmp_path / "w.txt").write_text("west data")
    du_east = cds.submit_data_unit({"file_urls": [str(tmp_path / "e.txt")], "affinity_datacenter_label": "east"})
    du_west = cds.submit_data_unit({"file_urls": [str(tmp_path / "w.txt")], "affinity_datacenter_label": "west"})
    du_east.wait(timeout=30)
    du_west.wait(timeout=30)
    assert [p.id for p in du_east.list_pilot_data()] == [pd_east.id]
    assert [p.id for p in du_west.list_pilot_data()] == [pd_west.id]
    units = cds.submit_compute_units([{"executable": "cat", "arguments": ["e.txt" if n % 2 else "w.txt"],
                                       "input_data": [(du_east if n % 2 else du_west).get_url()]}
                                      for n in range(12)])
    cds.wait(timeout=90)
    for n, unit in enumerate(units):
        details = unit.get_details()
        assert details["state"] == State.Done, details["reason"]
        assert details["pilot"] == (east if n % 2 else west).get_url()
        assert Path(details["sandbox"], "stdout.txt").read_text() == ("east data" if n % 2 else "west data")
    assert {d.id for d in cds.list_data_units()} == {du_east.id, du_west.id}


def test_the_placement_hook_sees_the_labels_of_the_data() -> None:
    seen = []

    class Spy:
        @hookimpl
        def pilot_place_unit(self, unit, pilots):
            seen.append((unit.input_data, tuple(unit.data_labels)))

    session = Session(PluginManager(entry_points=False, extra_plugins={"spy": Spy()}))
    from pilot.plugin.types import PilotView, UnitView

    view = UnitView("cu-1", 1, None, None, ("u#data-unit/du-1",), (("east", None),))
    pilots = [PilotView("p-w", State.Running, 2, 2, "west", None), PilotView("p-e", State.Running, 2, 1, "east", "m")]
    assert session.plugins.place_unit(view, pilots) == "p-e"
    assert seen == [(("u#data-unit/du-1",), (("east", None),))]
