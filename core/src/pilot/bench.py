"""Throughput benchmark: N units of ``/bin/true`` through one fork pilot with 2 slots, printed
beside the raw process-spawn rate of the same machine, measured in the same run. With
``--pilots P`` the same units also run through P fork pilots of one slot each, whose agents pull
from one service queue, and both figures are printed.

``python -m pilot.bench -n 10000 [--pilots 4]`` (or ``tox -e bench -- -n 100000``).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence


def print_rows(rows: Sequence[tuple[str, str, str]], value_width: int = 12) -> None:
    """Print ``(name, value, note)`` rows as an aligned table (every benchmark's output)."""
    width = max(len(row[0]) for row in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>{value_width}}  {note}".rstrip())


def spawn_rate(argv: Sequence[str], count: int, workers: int = 2) -> float:
    """Processes per second that ``workers`` threads reach running ``argv`` by subprocess."""
    def work(n: int) -> None:
        for _ in range(n):
            subprocess.run(argv, check=True)

    threads = [threading.Thread(target=work, args=(count // workers,)) for _ in range(workers)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return (count // workers * workers) / (time.perf_counter() - start)


def peak_rss_mb(pid: int | None = None) -> float:
    """Peak resident memory of this process (or of ``pid``, read from /proc) in MB."""
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run_pilot(units: int, slots: int, service_url: str, coordination_url: str | None,
              pilots: int = 1, *, progress: bool = False) -> dict[str, float]:
    """Run ``units`` x /bin/true through ``pilots`` pilots of ``slots`` slots (``progress``: with
    the progress display of ``wait``); return the figures."""
    from pilot import ComputeDataService, PilotComputeService, State

    pcs = PilotComputeService(coordination_url)
    work = tempfile.mkdtemp(prefix="pilot-bench-")
    t0 = time.perf_counter()
    handles = [pcs.create_pilot({"service_url": service_url, "number_of_processes": slots,
                                 "working_directory": work}) for _ in range(pilots)]
    for pilot in handles:
        while pilot.get_state() not in (State.Running, State.Failed, State.Canceled, State.Done):
            time.sleep(0.002)
        if pilot.get_state() != State.Running:
            raise SystemExit(f"pilot did not start: {pilot.get_details()['reason']}")
    startup = time.perf_counter() - t0
    cds = ComputeDataService(coordination_url=coordination_url)
    cds.add_pilot_compute_service(pcs)
    t1 = time.perf_counter()
    cds.submit_compute_units([{"executable": "/bin/true"}] * units)
    submitted = time.perf_counter() - t1
    cds.wait(progress=progress)
    total = time.perf_counter() - t1
    agent_mb = max(peak_rss_mb(pilot._record().get("agent_pid")) for pilot in handles)
    done = sum(1 for u in cds._store.find_units(cds_id=cds.id, states=[State.Done]))
    cds.cancel()
    return {"startup": startup, "submit": submitted, "total": total, "rate": units / total,
            "agent_mb": agent_mb, "done": done}


def main(argv: list[str] | None = None) -> int:
    """Print the benchmark figures."""
    parser = argparse.ArgumentParser(prog="python -m pilot.bench", description=__doc__)
    parser.add_argument("-n", "--units", type=int, default=10_000, help="units to run (default 10000)")
    parser.add_argument("--slots", type=int, default=2, help="pilot slots (default 2)")
    parser.add_argument("--raw", type=int, default=4000, help="processes for the raw spawn rate")
    parser.add_argument("--pilots", type=int, default=0,
                        help="also run the units through this many 1-slot pilots and print both figures")
    parser.add_argument("--progress", type=int, default=0, metavar="R",
                        help="also run the units R times with the progress display of wait() off and R times on, "
                             "in pairs (off-on, on-off, ...), and print the median rates and their ratio "
                             "(run it in a terminal)")
    parser.add_argument("--service-url", default="fork://localhost")
    parser.add_argument("--coordination-url", default=None, help="store URL (default: embedded SQLite)")
    args = parser.parse_args(argv)
    if not os.environ.get("PILOT_HOME") and not args.coordination_url:
        os.environ["PILOT_HOME"] = tempfile.mkdtemp(prefix="pilot-bench-home-")
    # the raw rates are measured before and after the pilot run and averaged, so drift in the
    # machine's load during the run does not favour either side
    argv_before = spawn_rate(["/bin/true"], args.raw, args.slots)
    sh_before = spawn_rate(["/bin/sh", "-c", "/bin/true"], args.raw, args.slots)
    figures = run_pilot(args.units, args.slots, args.service_url, args.coordination_url)
    many = run_pilot(args.units, 1, args.service_url, args.coordination_url, args.pilots) if args.pilots else None
    shown: dict[bool, list[float]] = {False: [], True: []}
    for run in range(args.progress):
        for progress in ((False, True) if run % 2 == 0 else (True, False)):  # neither always goes first
            shown[progress].append(run_pilot(args.units, args.slots, args.service_url, args.coordination_url,
                                             progress=progress)["rate"])
    argv_after = spawn_rate(["/bin/true"], args.raw, args.slots)
    sh_after = spawn_rate(["/bin/sh", "-c", "/bin/true"], args.raw, args.slots)
    argv_rate, sh_rate = (argv_before + argv_after) / 2, (sh_before + sh_after) / 2
    rows = [
        ("units", f"{args.units}", f"{int(figures['done'])} Done"),
        ("raw spawn rate, argv", f"{argv_rate:,.0f} /s",
         f"{args.slots} threads x subprocess.run(['/bin/true']); before {argv_before:,.0f}, after {argv_after:,.0f}"),
        ("raw spawn rate, /bin/sh -c", f"{sh_rate:,.0f} /s", f"before {sh_before:,.0f}, after {sh_after:,.0f}"),
        ("units per second, end to end", f"{figures['rate']:,.0f} /s", "submit to last unit final"),
        ("ratio to argv spawn rate", f"{figures['rate'] / argv_rate:.2f}", "goal: >= 0.6"),
        ("submit time", f"{figures['submit']:.2f} s", "submit_compute_units of all units"),
        ("create_pilot to Running", f"{figures['startup']:.3f} s", "goal: < 1 s"),
        ("client peak memory", f"{peak_rss_mb():.0f} MB", ""),
        ("agent peak memory", f"{figures['agent_mb']:.0f} MB", ""),
    ]
    if many is not None:
        rows += [
            (f"units per second, {args.pilots} pilots of 1 slot", f"{many['rate']:,.0f} /s",
             f"{int(many['done'])} Done; one service queue, every agent pulls from it"),
            ("ratio to one pilot", f"{many['rate'] / figures['rate']:.2f}", "goal: >= 0.8"),
        ]
    if args.progress:
        off, on = statistics.median(shown[False]), statistics.median(shown[True])
        runs = ", ".join(f"{a:,.0f}/{b:,.0f}" for a, b in zip(shown[False], shown[True], strict=True))
        rows += [
            ("units per second, progress off / on", f"{off:,.0f} / {on:,.0f}",
             f"medians of {args.progress} runs each, alternating, off/on: {runs}; "
             f"display on {'a terminal' if os.isatty(2) else 'a pipe (not a terminal!)'}"),
            ("ratio, progress on to off", f"{on / off:.3f}", "goal: >= 0.95"),
        ]
    print_rows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
