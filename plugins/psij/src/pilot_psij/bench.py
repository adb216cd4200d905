"""SLURM benchmark (on the test cluster of tests/infra): units per second through a 2-slot
``slurm://localhost`` pilot beside a fork pilot's rate in the same run, beside the rate of
running units as one ``sbatch`` job each, and how busy a three-node pilot keeps its slots.

``python -m pilot_psij.bench -n 2000 --sbatch 200`` (or ``tox -e bench-slurm``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any


def sbatch_rate(count: int) -> float:
    """Units per second when each unit is its own ``sbatch`` job (submit to last one finished)."""
    sbatch, squeue = shutil.which("sbatch"), shutil.which("squeue")
    if not sbatch or not squeue:
        raise SystemExit("sbatch/squeue not found: start the test cluster (tests/infra/start-slurm.sh)")
    start = time.perf_counter()
    ids = []
    for _ in range(count):
        out = subprocess.run([sbatch, "--parsable", "-o", "/dev/null", "-e", "/dev/null", "--wrap", "/bin/true"],
                             capture_output=True, text=True, check=True).stdout
        ids.append(out.strip().split(";")[0])
    pending = set(ids)
    while pending:
        out = subprocess.run([squeue, "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout
        pending &= set(out.split())
        if pending:
            time.sleep(0.05)
    return count / (time.perf_counter() - start)


def busy_fraction(units: list[dict[str, Any]], slots: int) -> float:
    """Average fraction of ``slots`` running a unit while units were still queued: from the first
    start to the last start (after which the queue is empty)."""
    spans: list[tuple[float, float]] = [(u["started"], u["finished"]) for u in units
                                        if u.get("started") and u.get("finished")]
    if not spans:
        return float("nan")
    begin = min(s for s, _ in spans)
    end = max(s for s, _ in spans)
    if end <= begin:
        return 1.0
    busy = sum(max(0.0, min(f, end) - max(s, begin)) for s, f in spans)
    return busy / (slots * (end - begin))


def three_node_utilisation(units: int, duration: float, work: str) -> tuple[float, int]:
    """Run ``units`` x ``sleep duration`` on a 3-node x 2-slot SLURM pilot; the busy fraction."""
    from pilot import ComputeDataService, PilotComputeService, State

    pcs = PilotComputeService()
    pilot = pcs.create_pilot({"service_url": "slurm://localhost", "number_of_processes": 6, "processes_per_node": 2,
                              "walltime": 30, "working_directory": work})
    while pilot.get_state() not in (State.Running, State.Failed, State.Canceled, State.Done):
        time.sleep(0.05)
    if pilot.get_state() != State.Running:
        raise SystemExit(f"three-node pilot did not start: {pilot.get_details()['reason']}")
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    cds.submit_compute_units([{"executable": f"sleep {duration:g}"}] * units)
    cds.wait()
    records = cds._store.find_units(cds_id=cds.id)
    done = sum(1 for r in records if r["state"] == State.Done)
    fraction = busy_fraction(records, 6)
    cds.cancel()
    pcs.cancel()
    return fraction, done


def main(argv: list[str] | None = None) -> int:
    """Print the figures."""
    parser = argparse.ArgumentParser(prog="python -m pilot_psij.bench", description=__doc__)
    parser.add_argument("-n", "--units", type=int, default=2000, help="units through each pilot (default 2000)")
    parser.add_argument("--sbatch", type=int, default=200, help="units run as one sbatch job each (default 200)")
    parser.add_argument("--busy-units", type=int, default=60, help="sleep units for the three-node pilot")
    parser.add_argument("--busy-seconds", type=float, default=1.0, help="how long each of those sleeps")
    parser.add_argument("--poll", default="0.5", help="PSI/J queue polling interval (s)")
    args = parser.parse_args(argv)
    os.environ.setdefault("PILOT_HOME", tempfile.mkdtemp(prefix="pilot-bench-home-"))
    os.environ["PILOT_PSIJ_POLL_INTERVAL"] = args.poll
    from pilot.bench import print_rows, run_pilot

    fork = run_pilot(args.units, 2, "fork://localhost", None)
    slurm = run_pilot(args.units, 2, "slurm://localhost", None)
    batch = sbatch_rate(args.sbatch)
    fraction, done = three_node_utilisation(args.busy_units, args.busy_seconds,
                                            tempfile.mkdtemp(prefix="pilot-bench-"))
    rows = [
        ("fork pilot, 2 slots", f"{fork['rate']:,.0f} units/s", f"N={args.units}, {int(fork['done'])} Done"),
        ("slurm pilot, 2 slots", f"{slurm['rate']:,.0f} units/s", f"N={args.units}, {int(slurm['done'])} Done"),
        ("  ratio to fork", f"{slurm['rate'] / fork['rate']:.2f}", "bar: >= 0.8"),
        ("  create_pilot to Running", f"{slurm['startup']:.2f} s", ""),
        ("one sbatch job per unit", f"{batch:,.1f} units/s", f"N={args.sbatch}"),
        ("  slurm pilot / sbatch", f"{slurm['rate'] / batch:.0f}x", "bar: >= 10x"),
        ("three-node pilot, slots busy", f"{fraction:.3f}",
         f"3 nodes x 2 slots, {done}/{args.busy_units} x sleep {args.busy_seconds:g}; bar: >= 0.7"),
    ]
    print_rows(rows, value_width=16)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
