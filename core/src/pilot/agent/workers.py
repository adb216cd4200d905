"""Slot workers: one thread per slot (up to a cap) takes the next queued unit that fits the free
slots, starts it, and blocks in ``wait()`` until it exits. Process start-up and the wait release
the GIL, so slots turn over in parallel without a round trip through the agent's loop."""

from __future__ import annotations

import collections
import functools
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from pilot.agent import native
from pilot.agent.native.slots import NativeSlots
from pilot.agent.remote import NodeExecutor, RemoteUnit, node_launcher, uses_stdio
from pilot.agent.units import (
    PREPARED_ELSEWHERE,
    GroupProcess,
    RunningUnit,
    StartError,
    UnitFiles,
    discard_files,
    prepare_files,
    start_unit,
    unit_sandbox,
)
from pilot.plugin.types import AgentResources, LaunchMethod

MAX_THREADS = 512
#: A unit killed by one of these signals that the agent did not send suggests the allocation is
#: being torn down (scancel, the scheduler's walltime): its slot waits this long for the agent's
#: own signal before it starts anything else.
TEARDOWN_SIGNALS = frozenset({signal.SIGTERM, signal.SIGKILL, signal.SIGHUP, signal.SIGINT})
TEARDOWN_PAUSE = 0.5
#: New executors a node gets after its executor died (``PILOT_NODE_EXECUTOR_RESTARTS``); then
#: its units go through the per-unit launch method.
DEFAULT_EXECUTOR_RESTARTS = 3

Event = tuple[Any, ...]
#: Most units whose sandboxes are made ahead at a time (each holds two open files until it starts).
PREPARE_AHEAD_MAX = 64


class SlotWorkers:
    """Runs queued units on the slots of an allocation and reports what happened as events:
    ``("staging", record, host, time, sandbox)`` (input staging begins), ``("started", unit, time,
    sandbox)``, ``("staging-out", unit, time)``, ``("ended", unit, returncode, time)``, ``("failed",
    record, host, sandbox, StartError, time)`` and ``("canceled", record, host, sandbox, time)`` (canceled
    while it waited for its input data). Units with data keys are staged in this thread by
    ``stager()`` (built on first use), before they start and after they succeed."""

    def __init__(self, resources: AgentResources, methods: Mapping[str, LaunchMethod], sandbox: str,
                 wake_fd: int, *, low_water: int, stager: Callable[[], Any] | None = None) -> None:
        self.resources, self.methods, self.sandbox = resources, methods, sandbox
        self.stager = stager
        self.local_host = resources.local_host or socket.gethostname()
        self.free_hosts = [node.host for node in resources.nodes for _ in range(node.slots)]
        self.total = len(self.free_hosts)
        self.cond = threading.Condition()
        self.ready: collections.deque[dict[str, Any]] = collections.deque()
        self.running: dict[str, RunningUnit] = {}
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.stopping = False
        self.halted = threading.Event()  # the agent got a signal to stop: start nothing more
        #: units whose cancel the agent saw before they started (a slot waiting for their input
        #: data gives up within 0.2 s)
        self.canceled: set[str] = set()
        self.wake_fd, self.low_water = wake_fd, low_water
        #: sandboxes made ahead, off the slot threads (unit id -> its open files); only where
        #: every slot is on this host, so a unit never gets a sandbox on a node it does not run on
        self.prepared: dict[str, UnitFiles] = {}
        self.prepare_ahead = all(node.host == self.local_host for node in resources.nodes)
        #: monotonic time until which this agent's claims hold (renewed by its heartbeats): a slot
        #: starts nothing after it, since others may then hand its units to another pilot
        self.lease_until = float("inf")
        self.executor_lock = threading.Lock()
        self.restarts: collections.Counter[str] = collections.Counter()
        self.retired: list[NodeExecutor] = []  # executors that died and were replaced
        self.max_restarts = int(os.environ.get("PILOT_NODE_EXECUTOR_RESTARTS") or DEFAULT_EXECUTOR_RESTARTS)
        self.executors = self._start_executors()
        #: units a slot thread must start (the native spawner could not)
        self.thread_only: set[str] = set()
        self.native = self._start_native()
        self.threads = [threading.Thread(target=self._work, name=f"pilot-slot-{n}", daemon=True)
                        for n in range(min(self.total, MAX_THREADS))]
        for thread in self.threads:
            thread.start()

    def _start_native(self) -> NativeSlots | None:
        """The native spawner for the plain units, where every slot is on this host and it can
        be built (``pilot.agent.native``); else None: slot threads start every unit."""
        if not self.prepare_ahead or not self.total or not native.enabled() or "fork" not in self.methods:
            return None
        from pilot.log import get_logger

        try:
            return NativeSlots(self, native.spawner_binary())
        except (native.SpawnerUnavailable, OSError) as exc:
            get_logger().info("native spawner not used; slot threads start every unit", reason=str(exc))
            return None

    def pump(self) -> None:
        """The agent's loop: take the native spawner's events, hand it more units."""
        if self.native is not None:
            self.native.pump()

    def queued(self) -> list[dict[str, Any]]:
        """The units claimed and not started: queued here or handed to the native spawner."""
        with self.cond:
            queued = list(self.ready)
        if self.native is not None:
            queued.extend(self.native.sent.values())
        return queued

    def waiting(self) -> int:
        """How many units ``queued()`` would list."""
        return len(self.ready) + (len(self.native.sent) if self.native is not None else 0)

    def halt(self) -> None:
        """Start nothing more (the agent got a signal, or drains)."""
        self.halted.set()
        if self.native is not None:
            self.native.lease(0.0)

    def add(self, records: list[dict[str, Any]]) -> None:
        """Queue claimed units, in order, their sandboxes and files made first (in the caller's
        thread: a slot then only spawns) for the plain units, those a slot would give nothing
        else before the start: no data to stage, no working directory of their own (at most
        ``PREPARE_AHEAD_MAX`` at a time)."""
        if self.prepare_ahead:
            for record in records:
                if len(self.prepared) >= PREPARE_AHEAD_MAX:
                    break  # the rest are made by their slots: descriptors stay few on large pilots
                description = record["description"]
                if self.native is not None and self.native.takes(record):
                    continue  # the native spawner makes its sandbox
                if record["id"] not in self.prepared and not any(description.get(k) for k in PREPARED_ELSEWHERE):
                    try:
                        self.prepared[record["id"]] = prepare_files(
                            description, unit_sandbox(self.sandbox, record["id"], description))
                    except StartError:
                        pass  # the slot tries again and reports why
        with self.cond:
            self.ready.extend(records)
            self.cond.notify(len(records))
        if self.native is not None:
            self.native.dispatch()

    def drop(self, ids: set[str]) -> list[dict[str, Any]]:
        """Take the queued units ``ids`` out of the queue (given back, canceled): what their
        sandboxes got ahead of time is undone. The units taken out."""
        with self.cond:
            dropped = [rec for rec in self.ready if rec["id"] in ids]
            if dropped:
                kept = [rec for rec in self.ready if rec["id"] not in ids]
                self.ready.clear()
                self.ready.extend(kept)
        if self.native is not None:
            dropped += self.native.take_back(ids)
        self.forget(dropped)
        return dropped

    def forget(self, records: list[dict[str, Any]]) -> None:
        """Undo the sandboxes made ahead for units that will not start here."""
        for record in records:
            files = self.prepared.pop(record["id"], None)
            if files is not None:
                discard_files(files, record["description"])

    def renew_lease(self, until: float) -> None:
        """Let the slots start units until ``until`` (monotonic)."""
        with self.cond:
            expired = self.lease_until <= time.monotonic()
            self.lease_until = until
            if expired:
                self.cond.notify_all()
        if self.native is not None and not self.halted.is_set():
            self.native.lease(until)

    def busy(self) -> int:
        """Slots in use."""
        return self.total - len(self.free_hosts)

    def stop(self, grace: float) -> list[dict[str, Any]]:
        """Start nothing more; wait up to ``grace`` s for the threads; return the units that
        were never started."""
        with self.cond:
            self.stopping = True
            left = list(self.ready)
            self.ready.clear()
            self.cond.notify_all()
        deadline = time.monotonic() + grace
        if self.native is not None:  # handed to the spawner before those still queued here
            left = self.native.stop(deadline) + left
        self.forget(left)
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self.native is not None:
            self.native.wait_running(deadline)
        return left

    def _start_executors(self) -> dict[str, NodeExecutor]:
        """One executor per other node when the remote launch method can start them (off with
        ``PILOT_NODE_EXECUTORS=0``)."""
        others = [node.host for node in self.resources.nodes if node.host != self.local_host]
        if node_launcher(self.methods.get(self.resources.remote_launch_method)) is None or not others \
                or os.environ.get("PILOT_NODE_EXECUTORS", "1") == "0":
            return {}
        return {host: self._new_executor(host) for host in dict.fromkeys(others)}

    def _new_executor(self, host: str) -> NodeExecutor:
        from pilot.log import get_logger

        launcher = node_launcher(self.methods[self.resources.remote_launch_method])
        assert launcher is not None
        return NodeExecutor(host, functools.partial(launcher.node_argv, host), get_logger().warning,
                            stdio=uses_stdio(launcher), token_dir=self.sandbox)

    def _executor(self, host: str) -> NodeExecutor | None:
        """The executor of ``host``: a new one when the last died after it had worked (at most
        ``max_restarts`` times per node); None when the node has none (per-unit launches)."""
        with self.executor_lock:
            executor = self.executors.get(host)
            if executor is None or executor.lost is None or self.stopping or self.halted.is_set():
                return executor
            if not executor.ready or self.restarts[host] >= self.max_restarts:
                return executor  # never worked, or keeps dying: usable() says no, units go per-unit
            self.restarts[host] += 1
            from pilot.log import get_logger

            get_logger().warning("node executor restarted", host=host, restart=self.restarts[host],
                                 of=self.max_restarts, after=executor.lost)
            self.retired.append(executor)
            self.executors[host] = self._new_executor(host)
            return self.executors[host]

    def close(self, grace: float) -> None:
        """Tell every executor to stop; kill those still there after ``grace`` s."""
        with self.executor_lock:
            executors = [*self.executors.values(), *self.retired]
        for executor in executors:
            executor.close()
        deadline = time.monotonic() + grace
        if self.native is not None:
            self.native.close(grace)
        for executor in executors:
            executor.finish(deadline)

    def drain_events(self) -> list[Event]:
        """Every event since the last call."""
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def _fits(self) -> bool:
        return bool(self.ready) and int(self.ready[0]["slots"]) <= len(self.free_hosts) and \
            (self.native is None or not self.native.takes(self.ready[0]))

    def _work(self) -> None:
        while True:
            with self.cond:
                while not self.stopping and not self.halted.is_set():
                    if not self._fits():
                        self.cond.wait()
                    elif time.monotonic() >= self.lease_until:
                        self.cond.wait(0.05)  # the lease ran out: wait for a heartbeat to renew it
                    else:
                        break
                if self.stopping or self.halted.is_set():
                    return
                record = self.ready.popleft()
                hosts = [self.free_hosts.pop() for _ in range(int(record["slots"]))]
                low = len(self.ready) <= self.low_water
            if low:
                try:
                    os.write(self.wake_fd, b"\0")  # ask the agent to claim more
                except OSError:
                    pass
            self._run(record, hosts)
            self.thread_only.discard(record["id"])
            with self.cond:
                self.free_hosts.extend(hosts)
                self.cond.notify(len(hosts))
                wake = self.native is not None and bool(self.ready)
            if wake:  # the loop hands the native spawner what this slot frees
                try:
                    os.write(self.wake_fd, b"\0")
                except OSError:
                    pass

    def _stop_staging(self, unit_id: str) -> str | None:
        """Why a slot should stop waiting for a unit's input data, if it should."""
        if unit_id in self.canceled:
            return "unit canceled"
        if self.stopping or self.halted.is_set():
            return "pilot draining"
        return None

    def _method(self, description: dict[str, Any], host: str) -> LaunchMethod:
        if description.get("spmd_variation") == "mpi":
            return self.methods[self.resources.mpi_launch_method]
        if host != self.local_host:
            return self.methods[self.resources.remote_launch_method]
        return self.methods["fork"]

    def _run(self, record: dict[str, Any], hosts: list[str]) -> None:
        description = record["description"]
        sandbox = unit_sandbox(self.sandbox, record["id"], description)
        started = time.time()
        stage_out = False
        if self.stager is not None and (description.get("input_data") or description.get("output_data")
                                        or description.get("file_transfer")):
            try:
                stager = self.stager()
                stage_in, stage_out = stager.needs_staging(description)
                if stage_in:
                    self.events.put(("staging", record, hosts[0], started, sandbox))
                    stager.stage_in(description, sandbox, functools.partial(self._stop_staging, record["id"]))
                    started = time.time()  # the unit's own start, after its input staging
            except Exception as exc:  # a failed transfer fails the unit with the reason
                from pilot.data.records import WaitStopped

                if isinstance(exc, WaitStopped):  # canceled, or the agent drains (it settles the unit)
                    if record["id"] in self.canceled:
                        self.events.put(("canceled", record, hosts[0], sandbox, started))
                    return
                self.events.put(("failed", record, hosts[0], sandbox, StartError(f"input staging failed: {exc}"),
                                 started))
                return
        files = self.prepared.pop(record["id"], None)
        proc: GroupProcess | None = None
        executor = self._executor(hosts[0]) if len(hosts) == 1 and description.get("spmd_variation") != "mpi" \
            else None
        if executor is not None and description.get("spmd_variation") != "mpi" and executor.usable():
            if files is not None:
                discard_files(files, description)
                files = None
            proc = executor.start(record["id"], description, sandbox)
            if proc is not None:
                try:
                    proc.wait_started()
                except StartError as exc:
                    self.events.put(("failed", record, hosts[0], sandbox, exc, started))
                    return
        try:
            if proc is None:
                proc = start_unit(description, sandbox, hosts, self._method(description, hosts[0]), files)
        except StartError as exc:
            self.events.put(("failed", record, hosts[0], sandbox, exc, started))
            return
        except Exception as exc:  # never lose a unit to an unexpected error
            self.events.put(("failed", record, hosts[0], sandbox, StartError(f"cannot start unit: {exc}"), started))
            return
        walltime = description.get("walltime")
        unit = RunningUnit(record["id"], proc, hosts, deadline=time.monotonic() + walltime * 60 if walltime else None)
        self.running[unit.id] = unit
        self.events.put(("started", unit, started, sandbox))
        returncode = proc.wait()
        del self.running[unit.id]
        if returncode < 0 and -returncode in TEARDOWN_SIGNALS and unit.kill_at is None:
            self.halted.wait(TEARDOWN_PAUSE)
        if isinstance(proc, RemoteUnit) and proc.lost is not None and unit.end is None:
            unit.end = ("Failed", proc.lost)
        if stage_out and returncode == 0 and unit.end is None and not unit.silent:
            self.events.put(("staging-out", unit, time.time()))
            try:
                self.stager().stage_out(description, sandbox)  # type: ignore[misc]
            except Exception as exc:
                unit.end = ("Failed", f"output staging failed: {exc}")
        self.events.put(("ended", unit, returncode, time.time()))
