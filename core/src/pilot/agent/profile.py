"""An opt-in profile of the agent's CPU by phase (``PILOT_AGENT_PROFILE=<path>``).

Off (the variable unset) it costs nothing: nothing is wrapped and the agent's code has no check
on its unit path. On, ``install`` wraps the agent's phase functions once, at agent start, with
timers that add each call's ``time.thread_time()`` and ``time.perf_counter()`` to totals kept per
thread (so no lock is taken per call), and a thread writes the totals as JSON to ``<path>`` every
``WRITE_EVERY`` s and when the agent ends::

    {"pid": 123, "pilot": "pilot-...", "final": true, "process_cpu": 1.9, "start_cpu": 0.2,
     "phases": {"spawn": {"cpu": 0.41, "wall": 0.52, "count": 10000}, ...}}

Times are seconds and exclusive: a phase called inside another (``spawn`` inside
``sandbox and files``) is subtracted from the outer one. ``process_cpu`` is the agent's user and
system time at the moment of writing, ``start_cpu`` that at ``install`` (its start-up); what no
phase covers (thread hand-offs, the interpreter between calls) is the difference.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pilot.agent.runner import Agent

PROFILE_ENV = "PILOT_AGENT_PROFILE"
WRITE_EVERY = 2.0  # seconds between two writes of the totals while the agent runs

#: phases of the agent's loop thread: ``Agent`` method -> phase name
LOOP_PHASES = {
    "claim": "claiming from the store",
    "flush": "store writes of state",
    "handle_events": "events to state changes",
    "check_canceled": "cancel checks",
    "claimer_chores": "peers and give-backs",
    "heartbeat": "heartbeat",
    "step": "loop, other",
}
SANDBOX = "sandbox and files"
SANDBOX_AHEAD = "sandboxes made ahead"
SPAWN = "spawning"
REAP = "waiting and reaping"
STAGING = "staging"
SLOT_OTHER = "slot threads, other"
#: the native spawner's own CPU (its process, not the agent's), from its last line
NATIVE = "native spawner process"


class Profile:
    """Per-phase totals of CPU and wall time, kept per thread, written as JSON to ``path``."""

    def __init__(self, path: str, pilot_id: str) -> None:
        self.path, self.pilot_id = path, pilot_id
        self._local = threading.local()
        self._tables: list[dict[str, list[float]]] = []
        self._lock = threading.Lock()  # taken once per thread, to register its table
        self._stop = threading.Event()
        times = os.times()
        self.start_cpu = times.user + times.system  # the agent's start-up: imports, store, plugins
        self.native: Any = None  # the agent's NativeSlots, whose ``cpu`` is known once it closed

    def _state(self) -> tuple[dict[str, list[float]], list[list[float]]]:
        try:
            return self._local.table, self._local.stack
        except AttributeError:
            table: dict[str, list[float]] = {}
            with self._lock:
                self._tables.append(table)
            self._local.table, self._local.stack = table, []
            return table, self._local.stack

    def timed(self, phase: str, func: Callable[..., Any]) -> Callable[..., Any]:
        """``func`` with its calls' CPU and wall time (less that of timed calls inside) added to ``phase``."""
        @functools.wraps(func)
        def timer(*args: Any, **kwargs: Any) -> Any:
            table, stack = self._state()
            inner = [0.0, 0.0]  # CPU and wall time of timed calls made inside this one
            stack.append(inner)
            cpu, wall = time.thread_time(), time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
                stack.pop()
                if stack:
                    stack[-1][0] += cpu
                    stack[-1][1] += wall
                row = table.get(phase)
                if row is None:
                    row = table[phase] = [0.0, 0.0, 0]
                row[0] += cpu - inner[0]
                row[1] += wall - inner[1]
                row[2] += 1
        return timer

    def totals(self) -> dict[str, dict[str, float]]:
        """The phases summed over every thread."""
        out: dict[str, dict[str, float]] = {}
        with self._lock:
            tables = list(self._tables)
        for table in tables:
            for phase, (cpu, wall, count) in list(table.items()):
                row = out.setdefault(phase, {"cpu": 0.0, "wall": 0.0, "count": 0})
                row["cpu"] += cpu
                row["wall"] += wall
                row["count"] += count
        return out

    def write(self, final: bool = False) -> None:
        """Write the totals to ``path`` (atomically: a reader never sees half a file)."""
        import json

        times = os.times()
        data = {"pid": os.getpid(), "pilot": self.pilot_id, "final": final, "written": time.time(),
                "process_cpu": times.user + times.system, "start_cpu": self.start_cpu, "phases": self.totals()}
        spawner = getattr(self.native, "cpu", ())
        if spawner:  # utime, stime of its own (its children are the units)
            data["spawner_cpu"] = spawner[0] + spawner[1]
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as out:
                json.dump(data, out)
            os.replace(tmp, self.path)
        except OSError:
            pass  # a profile must never stop the agent

    def _write_every(self) -> None:
        while not self._stop.wait(WRITE_EVERY):
            self.write()

    def close(self) -> None:
        """Stop the periodic writes and write the final totals."""
        self._stop.set()
        self.write(final=True)


def install(agent: Agent) -> Profile | None:
    """Profile ``agent`` when ``PILOT_AGENT_PROFILE`` names a file; else do nothing, return None."""
    path = os.environ.get(PROFILE_ENV)
    if not path:
        return None
    import pilot.agent.spawn as spawn_module
    import pilot.agent.units as units_module
    import pilot.agent.workers as workers_module

    profile = Profile(path, agent.pilot_id)
    for method, phase in LOOP_PHASES.items():  # instance attributes: the loop finds these first
        setattr(agent, method, profile.timed(phase, getattr(agent, method)))
    workers = agent.workers
    profile.native = workers.native
    workers._run = profile.timed(SLOT_OTHER, workers._run)  # type: ignore[method-assign]
    # the slot threads call these through their modules' globals and the class: this process only
    workers_module.start_unit = profile.timed(SANDBOX, workers_module.start_unit)  # type: ignore[attr-defined]
    workers_module.prepare_files = profile.timed(SANDBOX_AHEAD, workers_module.prepare_files)  # type: ignore[attr-defined]
    units_module.spawn = profile.timed(SPAWN, units_module.spawn)  # type: ignore[attr-defined]
    spawn_module.ChildProcess.wait = profile.timed(REAP, spawn_module.ChildProcess.wait)  # type: ignore[method-assign]
    if workers.stager is not None:
        workers.stager = _timed_stager(profile, workers.stager)
    threading.Thread(target=profile._write_every, name="pilot-agent-profile", daemon=True).start()
    return profile


def _timed_stager(profile: Profile, build: Callable[[], Any]) -> Callable[[], Any]:
    """``build`` (the agent's stager factory) whose stager's transfers count as staging."""
    seen: set[int] = set()
    lock = threading.Lock()

    def stager() -> Any:
        built = build()
        with lock:
            if id(built) not in seen:
                seen.add(id(built))
                for name in ("stage_in", "stage_out"):
                    setattr(built, name, profile.timed(STAGING, getattr(built, name)))
        return built
    return stager
