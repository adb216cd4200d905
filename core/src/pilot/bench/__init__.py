"""Throughput benchmark: N units of ``/bin/true`` through one fork pilot with 2 slots, printed
beside the raw process-spawn rate of the same machine, measured in the same run, with the CPU
per unit of client and agent (the agent's by phase, from a second run with its profile on) and
peak memory. With ``--pilots P`` the same units also run through P fork pilots of one slot each,
whose agents pull from one service queue; with ``--peers`` through Dask and Parsl too.

``python -m pilot.bench -n 10000 [--pilots 4] [--peers]`` (or ``tox -e bench -- -n 100000``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

from pilot.bench.measure import (
    peak_rss_mb,
    print_rows,
    remove_scratch,
    run_pilot,
    sandbox_spawn_rate,
    scratch,
    spawn_rate,
)

__all__ = ["main", "peak_rss_mb", "print_rows", "run_pilot", "spawn_rate"]


def _parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--no-agent-profile", action="store_true",
                        help="skip the second run with the agent's profile on (PILOT_AGENT_PROFILE), "
                             "which gives the agent's CPU by phase")
    parser.add_argument("--peers", action="store_true",
                        help="also run the workload through a Dask LocalCluster and Parsl's HighThroughputExecutor "
                             "(2 workers each; installed by tox -e bench)")
    parser.add_argument("--submit-only", action="store_true",
                        help="only submit the N units from a generator to a service with no pilot, and print the "
                             "submission time and the client's peak memory (handles included)")
    parser.add_argument("--runs", type=int, default=1, metavar="R",
                        help="run R times (with --pilots P, the P-pilot run too) and print the medians of the "
                             "rate, of its ratio to the spawn rate measured beside each run, and of the P-pilot "
                             "ratio; no profile, no peers")
    parser.add_argument("--service-url", default="fork://localhost")
    parser.add_argument("--coordination-url", default=None, help="store URL (default: embedded SQLite)")
    return parser


def submit_only(units: int, coordination_url: str | None) -> int:
    """Submit ``units`` descriptions from a generator to a service without pilots; print figures."""
    from pilot import ComputeDataService, PilotComputeService

    cds = ComputeDataService(coordination_url=coordination_url)
    cds.add_pilot_compute_service(PilotComputeService(coordination_url))
    started = time.perf_counter()
    handles = cds.submit_compute_units({"executable": "/bin/true", "arguments": [str(n)]} for n in range(units))
    took = time.perf_counter() - started
    print_rows([("units submitted from a generator", f"{len(handles)}", "no pilot: nothing runs"),
                ("submit time", f"{took:.1f} s", f"{units / took:,.0f} units/s"),
                ("client peak memory", f"{peak_rss_mb():.0f} MB", "the handles included")])
    cds.cancel()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Print the benchmark figures. The pilots' sandboxes are removed at the end; so is the
    store, which without ``PILOT_HOME`` (or a store URL) lives in a temporary home."""
    args = _parser().parse_args(argv)
    if args.peers:
        from pilot.bench.peers import MISSING, missing_peers

        missing = missing_peers()
        if missing:
            print(f"python -m pilot.bench: error: {MISSING.format(names=', '.join(missing))}", file=sys.stderr)
            return 2
    home = None
    if not os.environ.get("PILOT_HOME") and not args.coordination_url:
        home = os.environ["PILOT_HOME"] = tempfile.mkdtemp(prefix="pilot-bench-home-")
    try:
        return _run(args)
    finally:
        remove_scratch()
        if home is not None:
            del os.environ["PILOT_HOME"]
            shutil.rmtree(home, ignore_errors=True)


def _run(args: argparse.Namespace) -> int:
    from pilot.bench.phases import agent_rows, client_rows, us

    if args.submit_only:
        return submit_only(args.units, args.coordination_url)
    if args.runs > 1:
        from pilot.bench.repeat import repeated

        return repeated(args.runs, args.units, slots=args.slots, raw=args.raw, pilots=args.pilots,
                        service_url=args.service_url, coordination_url=args.coordination_url)
    where = (args.service_url, args.coordination_url)
    # the raw rates are measured before and after the pilot run and averaged, so drift in the
    # machine's load during the run does not favour either side
    argv_before = spawn_rate(["/bin/true"], args.raw, args.slots)
    sh_before = spawn_rate(["/bin/sh", "-c", "/bin/true"], args.raw, args.slots)
    box_before = sandbox_spawn_rate(["/bin/true"], args.raw, args.slots)
    figures = run_pilot(args.units, args.slots, *where)
    profiled = None if args.no_agent_profile else run_pilot(args.units, args.slots, *where, profile=True)
    many = run_pilot(args.units, 1, *where, args.pilots) if args.pilots else None
    shown: dict[bool, list[float]] = {False: [], True: []}
    for run in range(args.progress):
        for progress in ((False, True) if run % 2 == 0 else (True, False)):  # neither always goes first
            shown[progress].append(run_pilot(args.units, args.slots, *where, progress=progress)["rate"])
    peers = {}
    if args.peers:
        from pilot.bench.peers import dask_run, parsl_run

        peers = {"Dask LocalCluster": dask_run(args.units, args.slots),
                 "Parsl HighThroughputExecutor": parsl_run(args.units, args.slots)}
    argv_after = spawn_rate(["/bin/true"], args.raw, args.slots)
    sh_after = spawn_rate(["/bin/sh", "-c", "/bin/true"], args.raw, args.slots)
    box_after = sandbox_spawn_rate(["/bin/true"], args.raw, args.slots)
    argv_rate, sh_rate = (argv_before + argv_after) / 2, (sh_before + sh_after) / 2
    box_rate = (box_before + box_after) / 2
    rows = [
        ("units", f"{args.units}", f"{int(figures['done'])} Done"),
        ("raw spawn rate, argv", f"{argv_rate:,.0f} /s",
         f"{args.slots} threads x subprocess.run(['/bin/true']); before {argv_before:,.0f}, after {argv_after:,.0f}"),
        ("raw spawn rate, /bin/sh -c", f"{sh_rate:,.0f} /s", f"before {sh_before:,.0f}, after {sh_after:,.0f}"),
        ("raw spawn rate, argv in a sandbox", f"{box_rate:,.0f} /s",
         f"the same, each process in a directory of its own with two files, beside the pilots' sandboxes "
         f"({scratch()}): the file system's share; before {box_before:,.0f}, after {box_after:,.0f}"),
        ("units per second, end to end", f"{figures['rate']:,.0f} /s", "submit to last unit final"),
        ("ratio to argv spawn rate", f"{figures['rate'] / argv_rate:.2f}", "bar: >= 0.75 (median of --runs 10)"),
        ("ratio to argv in a sandbox", f"{figures['rate'] / box_rate:.2f}",
         "the same work per process as a unit's, less the pilot's own"),
        ("submit time", f"{figures['submit']:.2f} s", "submit_compute_units of all units"),
        ("create_pilot to Running", f"{figures['startup']:.3f} s", "goal: < 1 s"),
        ("client peak memory", f"{peak_rss_mb():.0f} MB", "every run of this command"),
        ("agent peak memory", f"{figures['agent_mb']:.0f} MB", ""),
        *client_rows(figures),
    ]
    if profiled is not None:
        rows += [
            ("units per second, agent profile on", f"{profiled['rate']:,.0f} /s",
             f"{int(profiled['done'])} Done; a second run, PILOT_AGENT_PROFILE set (its cost: ratio "
             f"{profiled['rate'] / figures['rate']:.2f} to the run above)"),
            *agent_rows(profiled["profiles"], args.units),
        ]
    if many is not None:
        rows += [
            (f"units per second, {args.pilots} pilots of 1 slot", f"{many['rate']:,.0f} /s",
             f"{int(many['done'])} Done; one service queue, every agent pulls from it"),
            ("ratio to one pilot", f"{many['rate'] / figures['rate']:.2f}", "goal: >= 0.8"),
            (f"  agent CPU per unit, {args.pilots} agents", us(many["cpu_agents"], args.units),
             f"client CPU per unit {us(many['cpu_client'], args.units)}; agent peak {many['agent_mb']:.0f} MB each"),
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
    for name, peer in peers.items():
        rows += [
            (f"tasks per second, {name}", f"{peer['rate']:,.0f} /s",
             f"{int(peer['done'])} Done; {args.slots} workers x subprocess.run(['/bin/true']); "
             f"start-up {peer['startup']:.1f} s (not counted)"),
            (f"  ratio to argv spawn rate ({name.split()[0]})", f"{peer['rate'] / argv_rate:.2f}",
             f"pilot: {figures['rate'] / argv_rate:.2f}"),
        ]
    print_rows(rows)
    return 0
