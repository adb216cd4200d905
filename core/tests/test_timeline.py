"""The timeline of a real run (two fork pilots, 30 units: some failing, some staging input from
a local PilotData and output back): its rows through the API, ``pilot timeline`` drawing it to
PNG, SVG and HTML, and the page opened in headless Chromium with one bar per unit."""

from __future__ import annotations

import itertools
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pilot import ComputeDataService, PilotCompute, PilotComputeService, PilotDataService, State
from pilot.session import Session
from pilot.testing import wait_for
from pilot.timeline import ROW_KEYS, load_timeline
from pilot.timeline.cli import timeline

UNITS = 30
FAILING = {3, 11, 19, 27}          # exit 3
STAGED = {0, 5, 10, 15, 20, 25}    # input_data in, output_data out


class Run:
    """A finished run, stored in its own PILOT_HOME."""

    def __init__(self, root: Path, session: Session, cds: ComputeDataService, pcs: PilotComputeService,
                 pilots: list[PilotCompute], unit_ids: list[str]) -> None:
        self.root, self.session, self.cds, self.pcs, self.pilots, self.unit_ids = \
            root, session, cds, pcs, pilots, unit_ids


def _description(n: int, inputs: str, outputs: str) -> dict[str, Any]:
    if n in FAILING:
        return {"executable": "sleep", "arguments": ["0.05", ";", "exit", "3"]}
    if n in STAGED:
        return {"executable": "sort", "arguments": ["in.txt", ">", f"sorted-{n}.out"], "input_data": [inputs],
                "output_data": [{outputs: ["*.out"]}]}
    return {"executable": "sleep", "arguments": [f"0.{n % 3 + 1}"]}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("timeline-run")
    session = Session()
    store_url = f"sqlite://{root / 'store.sqlite'}"
    (root / "in.txt").write_text("3\n1\n2\n")
    pds = PilotDataService(store_url, session=session)
    pd = pds.create_pilot({"service_url": str(root / "pd")})
    inputs = pd.submit_data_unit({"file_urls": [str(root / "in.txt")]})
    outputs = pd.submit_data_unit({"file_urls": []})
    pcs = PilotComputeService(store_url, session=session)
    pilots = [pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": slots,
                                "working_directory": str(root / "work")}) for slots in (2, 3)]
    for pilot in pilots:
        wait_for(lambda p=pilot: p.get_state() == State.Running, 20, f"{pilot} Running")
    cds = ComputeDataService(coordination_url=store_url, session=session)
    cds.add_pilot_compute_service(pcs)
    cds.add_pilot_data_service(pds)
    try:
        units = cds.submit_compute_units([_description(n, inputs.get_url(), outputs.get_url())
                                          for n in range(UNITS)])
        cds.wait(timeout=120)
    finally:
        pcs.cancel()  # the pilots end: their end is part of the picture
    yield Run(root, session, cds, pcs, pilots, [u.id for u in units])
    session.close()


def test_rows_say_where_and_when_each_unit_ran(run: Run) -> None:
    rows = run.cds.get_timeline()
    assert [r["id"] for r in rows] == run.unit_ids
    assert all(tuple(r) == ROW_KEYS for r in rows)
    slots = {p.id: p.get_details()["slots"] for p in run.pilots}
    for n, row in enumerate(rows):
        assert row["pilot"] in slots and 0 <= row["slot"] < slots[row["pilot"]], row
        assert row["host"] and row["slots"] == 1
        assert row["submitted"] <= (row["staging_in"] or row["started"]) <= row["started"] <= row["finished"]
        if n in FAILING:
            assert (row["state"], row["exit_code"], row["command"]) == ("Failed", 3, "sleep 0.05 ; exit 3")
            assert row["reason"]
        else:
            assert (row["state"], row["exit_code"]) == ("Done", 0), row
        if n in STAGED:
            assert row["staging_in"] is not None and row["staging_out"] is not None, row
            assert row["started"] <= row["staging_out"] <= row["finished"]
            assert row["command"] == f"sort in.txt > sorted-{n}.out"
        else:
            assert row["staging_in"] is None and row["staging_out"] is None, row
    # packed on the slots: no two units on one slot of a pilot at once
    for pilot_id, count in slots.items():
        for slot in range(count):
            spans = sorted((r["staging_in"] or r["started"], r["finished"]) for r in rows
                           if (r["pilot"], r["slot"]) == (pilot_id, slot))
            assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), (pilot_id, slot, spans)


def test_the_pilot_service_and_each_pilot_have_their_rows(run: Run) -> None:
    by_cds = {r["id"]: r for r in run.cds.get_timeline()}
    by_pcs = {r["id"]: r for r in run.pcs.get_timeline()}
    assert by_pcs == by_cds
    per_pilot = [p.get_timeline() for p in run.pilots]
    assert sorted(r["id"] for rows in per_pilot for r in rows) == sorted(by_cds)
    for pilot, rows in zip(run.pilots, per_pilot, strict=True):
        assert rows and {r["pilot"] for r in rows} == {pilot.id}
    reconnected = load_timeline(run.cds.get_url(), session=run.session)
    assert [p.id for p in reconnected.pilots] == [p.id for p in run.pilots]
    assert all(p.started is not None and p.finished is not None for p in reconnected.pilots)


def _pixels_of(png: Path, rgb: str) -> int:
    import numpy as np
    from matplotlib.image import imread

    image = imread(png)[..., :3]
    want = np.array([int(rgb[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int(np.all(np.abs(image - want) < 0.02, axis=-1).sum())


def _draw(url: str, out: Path, *extra: str) -> None:
    result = CliRunner().invoke(timeline, [url, "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    assert f"{UNITS} units on 2 pilots" in result.output


def test_pilot_timeline_draws_png_and_svg(run: Run, tmp_path: Path) -> None:
    _draw(run.cds.get_url(), tmp_path / "run.png")
    png = tmp_path / "run.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _pixels_of(png, "#2ca02c") > 500 and _pixels_of(png, "#d62728") > 20  # Done and Failed bars
    # by bare id with --store, of one pilot, as SVG
    _store, _, _ = run.cds.get_url().partition("#")
    pilot = run.pilots[1]
    result = CliRunner().invoke(timeline, [pilot.id, "--store", _store, "-o", str(tmp_path / "pilot.svg")])
    assert result.exit_code == 0, result.output
    root = ET.parse(tmp_path / "pilot.svg").getroot()
    assert root.tag.endswith("svg")
    assert "Failed" in (tmp_path / "pilot.svg").read_text()  # the legend names the states drawn


def test_pilot_timeline_refuses_what_it_cannot_draw(run: Run, tmp_path: Path) -> None:
    result = CliRunner().invoke(timeline, [run.cds.get_url(), "-o", str(tmp_path / "run.pdf")])
    assert result.exit_code != 0 and ".png, .svg or .html" in result.output
    unit_url = run.cds.get_url().replace("#cds/", "#unit/")
    result = CliRunner().invoke(timeline, [unit_url, "-o", str(tmp_path / "run.png")])
    assert result.exit_code != 0 and "service or a pilot" in result.output
    assert not (tmp_path / "run.png").exists()


def _chromium_or_skip() -> None:
    from pilot.timeline.browser import chromium

    if chromium() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("/usr/bin/chromium is missing (tests/infra installs Debian's chromium)")
        pytest.skip("/usr/bin/chromium is not installed (apt-get install chromium); CI runs this test")


def test_the_html_page_is_self_contained_and_opens_with_one_bar_per_unit(run: Run, tmp_path: Path) -> None:
    page = tmp_path / "run.html"
    _draw(run.cds.get_url(), page)
    text = page.read_text()
    assert "<script src=" not in text and "plotly" in text  # plotly.js embedded: opens offline
    _chromium_or_skip()
    from pilot.timeline.browser import count_bars, dump_dom, screenshot

    dom = dump_dom(page)
    assert count_bars(dom) == UNITS
    for unit_id in run.unit_ids[:3]:  # the hover data travels with the page
        assert unit_id in text
    shot = screenshot(page, tmp_path / "run-page.png")
    assert _pixels_of(shot, "#2ca02c") > 500 and _pixels_of(shot, "#d62728") > 20


def _unit(n: int, begin: float | None, end: float | None, slots: int = 1, pilot: str = "pilot-a") -> dict[str, Any]:
    return {"id": f"cu-{n}", "pilot_id": pilot if begin is not None else None, "state": "Done" if end else "Pending",
            "slots": slots, "description": {"executable": "true", "arguments": [n]}, "submitted": 0.0,
            "started": begin, "finished": end}


def test_units_are_packed_on_their_pilots_slots_in_start_order() -> None:
    from pilot.timeline import build_timeline

    pilot = {"id": "pilot-a", "slots": 4, "state": "Done", "started": 0.0, "finished": 20.0}
    units = [_unit(0, 1.0, 5.0), _unit(1, 1.5, 9.0, slots=2), _unit(2, 2.0, 3.0),
             _unit(3, 3.0, 8.0, slots=2),    # slots 0 and 3 free: not contiguous, so rows past the pilot's
             _unit(4, 9.0, 12.0, slots=4),   # everything free again
             _unit(5, None, None)]           # still queued: no slot
    drawn = build_timeline("t", [pilot], units, now=20.0)
    assert [r["slot"] for r in drawn.rows] == [0, 1, 3, 4, 0, None]
    assert [(p.id, p.first_row, p.rows) for p in drawn.pilots] == [("pilot-a", 0, 6)]
    assert drawn.rows[0]["command"] == "true 0"


def test_the_layout_counts_busy_slots_and_queued_units() -> None:
    from pilot.timeline import build_timeline
    from pilot.timeline.geometry import layout

    pilots = [{"id": "pilot-a", "slots": 2, "state": "Done", "started": 0.5, "finished": 10.0}]
    units = [_unit(0, 1.0, 4.0), _unit(1, 2.0, 6.0, slots=2), _unit(2, None, None)]
    geo = layout(build_timeline("t", pilots, units, now=10.0))
    assert len(geo.bars) == 2 and geo.y.tolist() == [0.0, 2.0]  # overlapping: the 2-slot unit gets new rows
    busy = dict(zip(geo.busy[0].tolist(), geo.busy[1].tolist(), strict=True))
    assert (busy[1.0], busy[2.0], busy[4.0], busy[6.0]) == (1.0, 3.0, 2.0, 0.0)
    assert geo.queue[1].tolist()[-1] == 1.0  # one unit still queued
    assert geo.end == 10.0


def test_a_store_of_schema_1_gains_the_staging_times(tmp_path: Path) -> None:
    import sqlite3

    from pilot.store import UnitUpdate
    from pilot.store.sqlite import SQLiteStore
    from pilot.testing.store_conformance import unit_record

    path = tmp_path / "v1.sqlite"
    store = SQLiteStore(path)
    store.insert_units([unit_record("cu-old")])
    store.close()
    con = sqlite3.connect(path)  # as pilot wrote it before the staging times were recorded
    con.executescript("ALTER TABLE units DROP COLUMN staging_in; ALTER TABLE units DROP COLUMN staging_out; "
                      "PRAGMA user_version = 1;")
    con.close()
    store = SQLiteStore(path)
    try:
        assert store.get_units(["cu-old"])[0]["staging_in"] is None
        store.update_units([UnitUpdate("cu-old", {"staging_in": 5.0, "staging_out": 7.5})])
        assert {k: store.get_units(["cu-old"])[0][k] for k in ("staging_in", "staging_out")} == \
            {"staging_in": 5.0, "staging_out": 7.5}
    finally:
        store.close()
