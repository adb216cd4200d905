"""What the benchmarks measure: the raw spawn rate, peak memory, CPU of processes and threads,
and one run of N units of ``/bin/true`` through fork pilots with the client's CPU by phase."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PROFILE_WAIT = 10.0  # seconds to wait for the agents' final profiles after cancel


def print_rows(rows: Sequence[tuple[str, str, str]], value_width: int = 12) -> None:
    """Print ``(name, value, note)`` rows as an aligned table (every benchmark's output)."""
    width = max(len(row[0]) for row in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>{value_width}}  {note}".rstrip())


def spawn_rate(argv: Sequence[str], count: int, workers: int = 2) -> float:
    """Processes per second that ``workers`` threads reach running ``argv`` by subprocess."""
    def work(_worker: int, n: int) -> None:
        for _ in range(n):
            subprocess.run(argv, check=True)

    return _threads_rate(work, count, workers)


def _threads_rate(work: Callable[[int, int], None], count: int, workers: int) -> float:
    """Items per second of ``workers`` threads each doing ``work(worker, count // workers)``."""
    threads = [threading.Thread(target=work, args=(w, count // workers)) for w in range(workers)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return (count // workers * workers) / (time.perf_counter() - start)


def sandbox_spawn_rate(argv: Sequence[str], count: int, workers: int = 2) -> float:
    """Processes per second that ``workers`` threads reach running ``argv`` by subprocess, each
    process in a directory of its own with its output and error files, made as a unit's sandbox
    is, in the directory where the benchmark's pilots keep their sandboxes (``scratch()``): the
    ceiling of any pilot that gives each unit a sandbox on that file system."""
    base = tempfile.mkdtemp(prefix="raw-", dir=scratch())
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC

    def work(worker: int, n: int) -> None:
        for i in range(n):
            sandbox = os.path.join(base, f"{worker}-{i}")
            os.mkdir(sandbox)
            out = os.open(os.path.join(sandbox, "stdout.txt"), flags, 0o666)
            err = os.open(os.path.join(sandbox, "stderr.txt"), flags, 0o666)
            try:
                subprocess.run(argv, check=True, cwd=sandbox, stdout=out, stderr=err)
            finally:
                os.close(out)
                os.close(err)

    return _threads_rate(work, count, workers)


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


def process_cpu(pid: int | None, *, children: bool = False) -> float:
    """User and system CPU seconds of process ``pid`` so far (``children``: of its reaped
    children instead; from /proc; NaN if unreadable)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except (OSError, TypeError):
        return float("nan")
    first = 13 if children else 11  # cutime, cstime / utime, stime
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")


def with_spawners(pid: int | None) -> list[int | None]:
    """``pid`` and its native spawner child, if it has one (/proc/<pid>/task/*/children)."""
    found: list[int | None] = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as children:
                for child in children.read().split():
                    if os.path.basename(os.readlink(f"/proc/{child}/exe")).startswith("spawner-"):
                        found.append(int(child))
    except (OSError, TypeError):
        pass
    return found


def machine_times() -> tuple[int, int]:
    """(idle, total) clock ticks of all CPUs so far (/proc/stat; idle includes iowait)."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(t) for t in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return ticks[3] + ticks[4], sum(ticks[:8])  # guest time is already in user


def idle_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of the machine's CPU time idle between two ``machine_times()`` (NaN if unknown)."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else float("nan")


def own_cpu() -> float:
    """User and system CPU seconds of this process so far (``getrusage``)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def thread_cpu(thread: threading.Thread) -> float:
    """CPU seconds of a live ``thread`` of this process so far (0 when it cannot be read)."""
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident or 0))
    except (OSError, AttributeError):
        return 0.0


def _placers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pilot-placer-")]


def read_profiles(paths: Sequence[Path], timeout: float = PROFILE_WAIT) -> list[dict[str, Any]]:
    """The agents' final profiles (``PILOT_AGENT_PROFILE``), waiting up to ``timeout`` s for them;
    the last periodic one of an agent that wrote no final one."""
    deadline = time.monotonic() + timeout
    profiles: dict[Path, dict[str, Any]] = {}
    while True:
        for path in paths:
            if not profiles.get(path, {}).get("final"):
                try:
                    profiles[path] = json.loads(path.read_text())
                except (OSError, ValueError):
                    pass
        if (all(p.get("final") for p in profiles.values()) and len(profiles) == len(paths)) \
                or time.monotonic() >= deadline:
            return list(profiles.values())
        time.sleep(0.05)


_SCRATCH: list[str] = []


def scratch() -> str:
    """The directory of this process's runs (their pilots' sandboxes), made on first use."""
    if not _SCRATCH:
        _SCRATCH.append(tempfile.mkdtemp(prefix="pilot-bench-"))
    return _SCRATCH[0]


def remove_scratch() -> None:
    """Remove the sandboxes of every run, once, at the end: on a file system mounted with
    ``discard`` (as here) a mass deletion makes ``mkdir`` about ten times slower for minutes, so
    removing them between runs would slow the runs after. ``rm`` runs in a process of its own
    (``rmtree`` would list a million entries in this one's memory)."""
    while _SCRATCH:
        subprocess.run(["/bin/rm", "-rf", "--", _SCRATCH.pop()], check=False)


def run_pilot(units: int, slots: int, service_url: str, coordination_url: str | None,
              pilots: int = 1, *, progress: bool = False, profile: bool = False) -> dict[str, Any]:
    """Run ``units`` x /bin/true through ``pilots`` pilots of ``slots`` slots (``progress``: with
    the progress display of ``wait``; ``profile``: with the agents' CPU profile on); return the
    figures: rates and times, peak memory, the client's CPU seconds by phase (``cpu_submit``,
    ``cpu_wait``: the main thread's; ``cpu_placer``: placer threads, only with client placement;
    ``cpu_client``: the whole process, all during submit and wait), ``cpu_agents``: the agents'
    CPU seconds from Running to the last unit final, ``cpu_units``: the units' own (reaped by the
    agents) in that time, ``idle``: the machine's idle share then, and ``profiles`` (the agents' JSON)."""
    from pilot import ComputeDataService, PilotComputeService, State
    from pilot.agent.profile import PROFILE_ENV
    from pilot.states import FINAL_STATES

    pcs = PilotComputeService(coordination_url)
    work = tempfile.mkdtemp(prefix="run-", dir=scratch())
    paths = [Path(work, f"agent-profile-{n}.json") for n in range(pilots)] if profile else []
    t0 = time.perf_counter()
    handles = []
    for n in range(pilots):
        description: dict[str, Any] = {"service_url": service_url, "number_of_processes": slots,
                                       "working_directory": work}
        if profile:
            description["environment"] = {PROFILE_ENV: str(paths[n])}
        handles.append(pcs.create_pilot(description))
    for pilot in handles:
        while pilot.get_state() not in (State.Running, State.Failed, State.Canceled, State.Done):
            time.sleep(0.002)
        if pilot.get_state() != State.Running:
            raise SystemExit(f"pilot did not start: {pilot.get_details()['reason']}")
    startup = time.perf_counter() - t0
    agent_processes = [p for pilot in handles for p in with_spawners(pilot._record().get("agent_pid"))]
    agents_before = sum(process_cpu(pid) for pid in agent_processes)
    units_before = sum(process_cpu(pid, children=True) for pid in agent_processes)
    machine_before = machine_times()
    cds = ComputeDataService(coordination_url=coordination_url)
    cds.add_pilot_compute_service(pcs)
    placers_before = sum(thread_cpu(t) for t in _placers())
    client_before = own_cpu()
    t1 = time.perf_counter()
    c1 = time.thread_time()
    cds.submit_compute_units([{"executable": "/bin/true"}] * units)
    c2 = time.thread_time()
    submitted = time.perf_counter() - t1
    cds.wait(progress=progress)
    c3 = time.thread_time()
    total = time.perf_counter() - t1
    client_cpu = own_cpu() - client_before
    placer_cpu = sum(thread_cpu(t) for t in _placers()) - placers_before
    agents_cpu = sum(process_cpu(pid) for pid in agent_processes) - agents_before
    units_cpu = sum(process_cpu(pid, children=True) for pid in agent_processes) - units_before
    idle = idle_share(machine_before, machine_times())
    agent_mb = max(peak_rss_mb(pid) for pid in agent_processes)
    done = cds._store.count_units(cds_id=cds.id).get(State.Done.value, 0)
    cds.cancel()
    profiles = read_profiles(paths) if profile else []
    ended = time.monotonic() + PROFILE_WAIT  # the agents end before the next run starts
    while time.monotonic() < ended and any(p.get_state() not in FINAL_STATES for p in handles):
        time.sleep(0.01)
    return {"startup": startup, "submit": submitted, "total": total, "rate": units / total,
            "agent_mb": agent_mb, "done": done, "units": units,
            "cpu_submit": c2 - c1, "cpu_wait": c3 - c2, "cpu_placer": placer_cpu, "cpu_client": client_cpu,
            "cpu_agents": agents_cpu, "cpu_units": units_cpu, "idle": idle, "profiles": profiles}
