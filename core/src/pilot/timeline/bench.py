"""Timeline render benchmark: ``python -m pilot.timeline.bench -n 10000``.

Writes a synthetic run of N units (``--pilots`` pilots of ``--slots`` slots each; random
durations, some units staging in and out, some failing or canceled) into a fresh embedded store
the way agents record it, then times what ``pilot timeline`` does: loading the rows, drawing the
PNG, the SVG and the HTML page, and (when Chromium is installed) opening the page headless and
counting its bars. Prints the figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import heapq
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from pilot import urls
from pilot.session import Session
from pilot.store import CoordinationStore, Record


def synthetic_run(store: CoordinationStore, units: int, pilots: int, slots: int, seed: int = 15) -> str:
    """Store a finished run of ``units`` units on ``pilots`` pilots; the ComputeDataService's id."""
    rng = random.Random(seed)  # noqa: S311 (synthetic durations)
    t0 = time.time() - 3600.0
    cds_id, pcs_id = "cds-bench", "pcs-bench"
    store.put_service(cds_id, "cds", {"placement": "agents"})
    store.put_service(pcs_id, "pcs", {"heartbeat_timeout": 60.0})
    store.link(cds_id, pcs_id)
    store.link(pcs_id, cds_id)
    free: list[tuple[float, str]] = []  # (time a slot frees up, pilot), a heap
    pilot_records: list[Record] = []
    for n in range(pilots):
        pilot_id = f"pilot-{n:04d}bench"
        started = t0 + rng.uniform(0.5, 5.0)
        pilot_records.append({"id": pilot_id, "service_id": pcs_id, "state": "Done", "slots": slots,
                              "submitted": t0, "started": started, "hosts": ["bench"]})
        free += [(started, pilot_id)] * slots
    heapq.heapify(free)
    records: list[Record] = []
    ends: dict[str, float] = {}
    for n in range(units):
        submitted = t0 + (n // 1000) * 2.0  # submitted in batches of 1000
        begin, pilot_id = heapq.heappop(free)
        begin = max(begin, submitted) + rng.uniform(0.0, 0.01)
        record: dict[str, Any] = {"id": f"cu-bench{n:06d}", "cds_id": cds_id, "pilot_id": pilot_id,
                                  "slots": 1, "submitted": submitted, "host": "bench", "exit_code": 0,
                                  "description": {"executable": "/bin/sleep", "arguments": [f"{n % 7}"]}}
        started = begin
        if n % 10 == 0:
            record["staging_in"], started = begin, begin + rng.uniform(0.1, 2.0)
        finished = started + rng.lognormvariate(1.0, 0.8)
        if n % 15 == 0:
            record["staging_out"], finished = finished, finished + rng.uniform(0.1, 1.0)
        state = "Done"
        if n % 20 == 7:
            state, record["exit_code"], record["reason"] = "Failed", 3, "exit code 3"
        elif n % 97 == 5:
            state, record["exit_code"], record["reason"] = "Canceled", None, "canceled by the user"
        record.update(state=state, started=started, finished=finished)
        records.append(record)
        ends[pilot_id] = max(ends.get(pilot_id, 0.0), finished)
        heapq.heappush(free, (finished, pilot_id))
    for pilot in pilot_records:
        pilot["finished"] = ends.get(pilot["id"], float(pilot["started"])) + 1.0
        store.insert_pilot(pilot)
    store.insert_units(records)
    return cds_id


def _timed(what: str, call: Any) -> Any:
    began = time.perf_counter()
    result = call()
    print(f"{what:<28} {time.perf_counter() - began:8.2f} s")
    return result


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m pilot.timeline.bench", description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--units", type=int, default=10_000)
    parser.add_argument("--pilots", type=int, default=4)
    parser.add_argument("--slots", type=int, default=32, help="slots per pilot")
    parser.add_argument("--keep", metavar="DIR", help="write the files here (default: a temporary directory)")
    parser.add_argument("--no-chromium", action="store_true", help="do not open the page in Chromium")
    args = parser.parse_args(argv)

    from pilot.timeline import load_timeline, render
    from pilot.timeline.browser import chromium, count_bars, dump_dom, screenshot

    with tempfile.TemporaryDirectory(prefix="pilot-timeline-bench-") as tmp:
        out = Path(args.keep or tmp)
        out.mkdir(parents=True, exist_ok=True)
        session = Session()
        try:
            store_url = f"sqlite://{out / 'store.sqlite'}"
            store = session.store(store_url)
            print(f"{args.units} units on {args.pilots} pilots x {args.slots} slots")
            cds_id = _timed("store the synthetic run", lambda: synthetic_run(
                store, args.units, args.pilots, args.slots))
            url = urls.make(store.url, "cds", cds_id)
            timeline = _timed("load the rows", lambda: load_timeline(url, session=session))
            for suffix in ("png", "svg", "html"):
                path = _timed(f"render {suffix.upper()}", lambda s=suffix: render(timeline, out / f"run.{s}"))
                print(f"{'':<28} {path.stat().st_size / 1e6:8.2f} MB  {path}")
            if args.no_chromium or chromium() is None:
                print("chromium: not run" + ("" if args.no_chromium else " (not installed)"))
                return
            dom = _timed("open HTML in Chromium", lambda: dump_dom(out / "run.html", timeout=300))
            print(f"{'bars in the page':<28} {count_bars(dom):8d} (units: {len(timeline.rows)})")
            _timed("screenshot it in Chromium", lambda: screenshot(out / "run.html", out / "run-page.png", 300))
        finally:
            session.close()


if __name__ == "__main__":
    main()
