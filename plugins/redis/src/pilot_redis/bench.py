"""Scale benchmark of the Redis store beside the embedded SQLite store, in one run:

1. N units (default 100,000) of ``/bin/true`` through one service and one 2-slot fork pilot, with
   each store: units per second end to end, client and agent peak memory, store size on disk;
2. units per second at 10,000 units on a fork pilot, Redis beside SQLite (bar: >= 0.8), run in
   the order sqlite, redis, redis, sqlite and averaged, so drift in the machine's speed cancels;
3. units per second on the three-node SLURM test cluster (tests/infra) with 1, 2 and 3 nodes of
   4 slots, through Redis: ``--slurm-units`` (default 5,000; 0 skips) of ``/bin/true``, where
   srun's cost per step dominates, and ``--slurm-sleep-units`` of ``sleep --slurm-sleep``, where
   the slots do.

Every run is a fresh process, so peak memory is that run's. Redis runs are made against a
private ``redis-server`` (append-only file on) started in a temporary directory, so the size on
disk is this run's alone. ``python -m pilot_redis.bench`` (or ``tox -e bench-redis``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def one_run(units: int, url: str | None, service_url: str, slots: int, *, per_node: int | None = None,
            executable: str = "/bin/true") -> dict[str, Any]:
    """Run ``units`` x ``executable`` through one pilot in this process; return the figures."""
    from pilot import ComputeDataService, PilotComputeService, State
    from pilot.bench import peak_rss_mb

    pcs = PilotComputeService(url)
    description: dict[str, Any] = {"service_url": service_url, "number_of_processes": slots, "walltime": 60,
                                   "working_directory": tempfile.mkdtemp(prefix="pilot-bench-")}
    if per_node:
        description["processes_per_node"] = per_node
    pilot = pcs.create_pilot(description)
    while pilot.get_state() not in (State.Running, State.Failed, State.Canceled, State.Done):
        time.sleep(0.01)
    if pilot.get_state() != State.Running:
        raise SystemExit(f"pilot did not start: {pilot.get_details()['reason']}")
    cds = ComputeDataService(coordination_url=url)
    cds.add_pilot_compute_service(pcs)
    start = time.perf_counter()
    cds.submit_compute_units([{"executable": executable}] * units)
    submitted = time.perf_counter() - start
    cds.wait()
    total = time.perf_counter() - start
    agent_mb = peak_rss_mb(pilot._record().get("agent_pid")) if service_url.startswith("fork") else float("nan")
    records = cds._store.find_units(cds_id=cds.id, fields=("state", "host"))
    done = sum(1 for r in records if r["state"] == State.Done)
    hosts = len({r["host"] for r in records})
    cds.cancel()
    return {"rate": units / total, "submit": submitted, "done": done, "hosts": hosts, "agent_mb": agent_mb,
            "client_mb": peak_rss_mb()}


class PrivateRedis:
    """A redis-server for this benchmark only: loopback, a free port, append-only file on."""

    def __init__(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise SystemExit("redis-server not found (apt-get install redis-server, or tests/infra/start-redis.sh)")
        self.dir = Path(tempfile.mkdtemp(prefix="pilot-bench-redis-"))
        self.password = uuid.uuid4().hex
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.proc = subprocess.Popen([server, "--bind", "127.0.0.1", "--port", str(self.port),
                                      "--dir", str(self.dir), "--appendonly", "yes", "--save", "",
                                      "--requirepass", self.password, "--logfile", str(self.dir / "log")])
        import redis

        client = redis.Redis(port=self.port, password=self.password)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()

    def url(self, db: int) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    def memory_mb(self) -> float:
        import redis

        client = redis.Redis(port=self.port, password=self.password)
        used = int(client.info("memory")["used_memory"])
        client.close()
        return used / 2**20

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _child(units: int, url: str | None, service_url: str, slots: int, *, env: dict[str, str],
           per_node: int | None = None, executable: str = "/bin/true") -> dict[str, Any]:
    argv = [sys.executable, "-m", "pilot_redis.bench", "--one", "-n", str(units), "--service-url", service_url,
            "--slots", str(slots), "--executable", executable]
    if url:
        env = {**env, "PILOT_BENCH_URL": url}  # the URL (password included) never goes on a command line
    if per_node:
        argv += ["--per-node", str(per_node)]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"benchmark run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _sqlite_run(units: int) -> tuple[dict[str, Any], int]:
    home = Path(tempfile.mkdtemp(prefix="pilot-bench-home-"))
    figures = _child(units, None, "fork://localhost", 2, env={**os.environ, "PILOT_HOME": str(home)})
    size = _dir_size(home)
    shutil.rmtree(home, ignore_errors=True)
    return figures, size


def main(argv: list[str] | None = None) -> int:
    """Print the figures."""
    from pilot.bench import print_rows

    parser = argparse.ArgumentParser(prog="python -m pilot_redis.bench", description=__doc__)
    parser.add_argument("-n", "--units", type=int, default=100_000, help="units per store (default 100000)")
    parser.add_argument("--compare", type=int, default=10_000, help="units of the Redis/SQLite comparison")
    parser.add_argument("--slurm-units", type=int, default=5_000, help="units per SLURM run (0: skip)")
    parser.add_argument("--slurm-sleep", type=float, default=0.5,
                        help="seconds each unit of the SLURM scaling runs sleeps (default 0.5)")
    parser.add_argument("--slurm-sleep-units", type=int, default=600, help="units per SLURM scaling run")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--executable", default="/bin/true", help=argparse.SUPPRESS)
    parser.add_argument("--service-url", default="fork://localhost", help=argparse.SUPPRESS)
    parser.add_argument("--slots", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--per-node", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one_run(args.units, os.environ.get("PILOT_BENCH_URL"), args.service_url, args.slots,
                                 per_node=args.per_node or None, executable=args.executable)))
        return 0
    rows: list[tuple[str, str, str]] = []
    server = PrivateRedis()
    env = {**os.environ, "PILOT_REDIS_CREDENTIALS": str(server.dir / "credentials"),
           "PILOT_HOME": tempfile.mkdtemp(prefix="pilot-bench-home-")}
    try:
        for units in dict.fromkeys([args.units, args.compare]):
            sqlite, sqlite_size = _sqlite_run(units)
            db = 1 if units == args.units else 2
            before = _dir_size(server.dir)
            red = _child(units, server.url(db), "fork://localhost", 2, env=env)
            red_size = _dir_size(server.dir) - before
            for name, fig, size in (("sqlite", sqlite, sqlite_size), ("redis", red, red_size)):
                rows.append((f"{name}, N={units:,}", f"{fig['rate']:,.0f} units/s",
                             f"{fig['done']:,} Done; submit {fig['submit']:.1f} s; client {fig['client_mb']:.0f} MB; "
                             f"agent {fig['agent_mb']:.0f} MB; on disk {size / 2**20:.1f} MB"))
            if units != args.compare:
                rows.append((f"  redis / sqlite, N={units:,}", f"{red['rate'] / sqlite['rate']:.2f}", ""))
                continue
            # the comparison runs again in the opposite order (sqlite, redis, redis, sqlite), so a
            # machine that speeds up or slows down during the runs favours neither store
            red_again = _child(units, server.url(3), "fork://localhost", 2, env=env)
            sqlite_again, _ = _sqlite_run(units)
            ratio = (red["rate"] + red_again["rate"]) / (sqlite["rate"] + sqlite_again["rate"])
            rows.append((f"  redis / sqlite, N={units:,}", f"{ratio:.2f}",
                         f"bar: >= 0.8; runs sqlite {sqlite['rate']:,.0f}, redis {red['rate']:,.0f}, "
                         f"redis {red_again['rate']:,.0f}, sqlite {sqlite_again['rate']:,.0f} units/s"))
        rows.append(("  redis server memory", f"{server.memory_mb():.0f} MB", "used_memory after all runs"))
        if args.slurm_units:
            env["PILOT_PSIJ_POLL_INTERVAL"] = "0.5"
            runs = [(nodes, args.slurm_units, "/bin/true") for nodes in (1, 2, 3)]
            if args.slurm_sleep_units:
                runs += [(nodes, args.slurm_sleep_units, f"sleep {args.slurm_sleep:g}") for nodes in (1, 2, 3)]
            for db, (nodes, units, executable) in enumerate(runs, 4):
                fig = _child(units, server.url(db), "slurm://localhost", 4 * nodes, env=env, per_node=4,
                             executable=executable)
                rows.append((f"slurm, {nodes} node(s) x 4 slots, {executable}", f"{fig['rate']:,.1f} units/s",
                             f"N={units:,}, {fig['done']:,} Done on {fig['hosts']} host(s); redis store"))
    finally:
        server.stop()
    print_rows(rows, value_width=16)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
