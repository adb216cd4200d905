"""Plain units through the native spawner, driven from the agent's loop in batches.

A *plain* unit needs nothing a slot thread would do before its start: one slot on this host, no
data to stage, no working directory, environment or input file of its own, not MPI. The loop
hands such units, in queue order, to the spawner a few ahead of their start, with one slot token
per free slot; the spawner starts the next queued unit on the token a unit frees as soon as it
reaps it, so slots turn over without the agent's Python in between, and gives tokens back when it
has nothing queued. Its events (started, ended, not started) become the slot workers' events.

A unit the spawner could not start (no sandbox, an output file it cannot open, a program it
cannot exec) goes back to the head of the queue for a slot thread, which starts it the usual way
or fails it with the usual reason (exit code 127, a shell script without ``#!``...).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pilot.agent.units import PREPARED_ELSEWHERE, RunningUnit, same_file
from pilot.binding import PREFETCH_PER_SLOT
from pilot.plugin.types import LaunchRequest

if TYPE_CHECKING:
    from pilot.agent.workers import SlotWorkers

READY_SECONDS = 5.0
#: description keys that make a unit a slot thread's business
THREAD_KEYS = PREPARED_ELSEWHERE | {"environment", "input"}
ARGV_CACHE_MAX = 4096  # distinct command lines whose argv is kept
#: units handed to the spawner ahead of a free slot, per slot (at most LOOKAHEAD_MAX): as many as
#: the agent prefetches, so the spawner has work while the loop writes a batch of states
LOOKAHEAD_PER_SLOT, LOOKAHEAD_MAX = PREFETCH_PER_SLOT + 1, 4096


class NativeChild:
    """A unit process the spawner started; signalled through the spawner, which knows when it
    was reaped (no pid reuse race)."""

    def __init__(self, slots: NativeSlots, tag: int, pid: int) -> None:
        self.slots, self.tag, self.pid = slots, tag, pid
        self.returncode: int | None = None

    def wait(self) -> int:
        """The return code once the spawner reported the end (the loop waits, not a thread)."""
        return self.returncode if self.returncode is not None else 0

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to its process group while it runs."""
        if self.returncode is None:
            if self.slots.dead:
                try:
                    os.killpg(self.pid, signum)
                except (ProcessLookupError, PermissionError):
                    pass
            else:
                self.slots.send(b"K\0%d\0%d\n" % (self.tag, signum))


class NativeSlots:
    """The spawner process and what the agent handed it."""

    def __init__(self, workers: SlotWorkers, binary: str) -> None:
        self.workers = workers
        self.proc = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.in_fd, self.out_fd = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        self.lock = threading.Lock()  # writes come from the loop and the signal watchdog
        self.buffer = b""
        self.dead = False
        self.closing = False
        self.quiet = False  # the spawner answered a Q
        self.given_up: list[dict[str, Any]] | None = None  # while stopping: the units it dropped
        self.cpu: tuple[float, ...] = ()  # its exit line: utime, stime, cutime, cstime
        self.sent: dict[int, dict[str, Any]] = {}  # tag -> queued unit, not yet started
        self.units: dict[int, RunningUnit] = {}  # tag -> running unit
        self.tokens = 0  # slot tokens the spawner holds
        self.next_tag = 0
        self.lookahead = min(LOOKAHEAD_MAX, LOOKAHEAD_PER_SLOT * workers.total)
        method = workers.methods["fork"]
        self.argv = method.argv
        #: a method whose argv depends on the command line alone (``line_only``) has it kept per line
        self.argv_of_line: dict[str, list[str]] | None = {} if getattr(method, "line_only", False) else None
        if not select.select([self.out_fd], [], [], READY_SECONDS)[0] or \
                not os.read(self.out_fd, 64).startswith(b"ready "):
            self.proc.kill()
            self.proc.wait()
            raise OSError(f"{binary} did not start")
        os.set_blocking(self.out_fd, False)
        self.send(b"W\0%d\n" % (self.lookahead // 2))  # events in batches while it has work queued

    def takes(self, record: dict[str, Any]) -> bool:
        """Whether ``record`` is a plain unit the spawner may start."""
        if self.dead or int(record["slots"]) != 1 or record["id"] in self.workers.thread_only:
            return False
        description = record["description"]
        if description.get("spmd_variation") == "mpi":
            return False
        named = THREAD_KEYS & description.keys()
        return not named or not any(description[k] for k in named)

    def send(self, data: bytes) -> None:
        """Write requests (whole, under the lock); a dead spawner is noticed by ``pump``."""
        with self.lock:
            if self.closing:  # its input is closed: the descriptor may be another file's by now
                return
            try:
                while data:
                    data = data[os.write(self.in_fd, data):]
            except OSError:
                pass

    def lease(self, until: float) -> None:
        """Start nothing after ``until`` (monotonic; 0: from now on)."""
        self.send(b"L\0%r\n" % min(until, 1e300))  # the spawner reads a finite number

    # --- the loop's side ------------------------------------------------------------------
    def pump(self) -> None:
        """Turn the spawner's events into slot worker events, then hand it more units."""
        self.read_events()
        self.dispatch()

    def dispatch(self) -> None:
        """Hand the spawner the plain units at the head of the queue (up to the lookahead) and
        a token per free slot they can use."""
        workers = self.workers
        if self.dead or workers.stopping or workers.halted.is_set():
            return
        requests = []
        with workers.cond:
            while workers.ready and len(self.sent) < self.lookahead and self.takes(workers.ready[0]):
                record = workers.ready[0]
                request = self.request(record)
                if request is None:
                    workers.thread_only.add(record["id"])
                    workers.cond.notify()
                    break
                workers.ready.popleft()
                self.next_tag += 1
                self.sent[self.next_tag] = record
                requests.append(b"S\0%d\0%s\n" % (self.next_tag, request))
            idle = self.tokens - len(self.units)
            grant = min(len(workers.free_hosts), len(self.sent) - idle)
            for _ in range(max(0, grant)):
                workers.free_hosts.pop()
                self.tokens += 1
                requests.append(b"T\n")
        if requests:
            self.send(b"".join(requests))

    def request(self, record: dict[str, Any]) -> bytes | None:
        """The fields of a start request; None when a field cannot go on one line."""
        description = record["description"]
        sandbox = os.path.join(self.workers.sandbox, record["id"])
        output = description.get("output", "stdout.txt")
        error = description.get("error", "stderr.txt")
        same = same_file(output, error)
        arguments = description.get("arguments")
        line = " ".join([description["executable"], *arguments]) if arguments else description["executable"]
        cache = self.argv_of_line
        argv = cache.get(line) if cache is not None else None
        if argv is None:
            try:
                argv = self.argv(LaunchRequest(line, (self.workers.local_host,), Path(sandbox), 1, False))
            except Exception:
                return None
            if cache is not None and len(cache) < ARGV_CACHE_MAX:
                cache[line] = argv
        fields = [sandbox, os.path.join(sandbox, output), "" if same else os.path.join(sandbox, error), *argv]
        data = "\0".join(fields)
        if "\n" in data or not argv or data.count("\0") != len(fields) - 1:  # a NUL or newline of its own
            return None
        try:
            return os.fsencode(data)
        except UnicodeError:
            return None

    def read_events(self) -> None:
        """Read what the spawner wrote and act on each whole line."""
        if self.dead:
            return
        chunks = []
        eof = False
        while True:
            try:
                chunk = os.read(self.out_fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                eof = True
                break
            if not chunk:
                eof = True
                break
            chunks.append(chunk)
        if chunks:
            data = self.buffer + b"".join(chunks)
            *lines, self.buffer = data.split(b"\n")
            for line in lines:
                self.event(line.split(b" "))
        if eof:
            self.died()

    def event(self, words: list[bytes]) -> None:
        """Act on one event line."""
        workers, kind = self.workers, words[0]
        if kind == b"s":
            record = self.sent.pop(int(words[1]))
            walltime = record["description"].get("walltime")
            unit = RunningUnit(record["id"], NativeChild(self, int(words[1]), int(words[2])), [workers.local_host],
                               deadline=time.monotonic() + walltime * 60 if walltime else None)
            self.units[int(words[1])] = workers.running[unit.id] = unit
            workers.events.put(("started", unit, float(words[3]), os.path.join(workers.sandbox, unit.id)))
        elif kind == b"e":
            unit = self.units.pop(int(words[1]))
            workers.running.pop(unit.id, None)
            returncode = int(words[2])
            unit.proc.returncode = returncode  # type: ignore[attr-defined]
            workers.events.put(("ended", unit, returncode, float(words[3])))
            if words[4] == b"0":
                self.give_back(1)
        elif kind == b"r":
            self.give_back(1)
        elif kind == b"f":
            record = self.sent.pop(int(words[1]))
            with workers.cond:  # a slot thread starts it the usual way, or says why it cannot
                workers.thread_only.add(record["id"])
                workers.ready.appendleft(record)
                workers.cond.notify()
        elif kind == b"d":
            dropped = self.sent.pop(int(words[1]), None)
            if dropped is not None and self.given_up is not None:
                self.given_up.append(dropped)
        elif kind == b"q":
            self.quiet = True
        elif kind == b"x":
            self.cpu = tuple(float(w) for w in words[1:])

    def give_back(self, count: int) -> None:
        """Slot tokens came back: their slots are free again."""
        workers = self.workers
        with workers.cond:
            self.tokens -= count
            workers.free_hosts.extend([workers.local_host] * count)
            workers.cond.notify(count)

    def died(self) -> None:
        """The spawner ended while the agent needs it: its running units are killed and end
        Failed, the units it had not started go back to the queue, and slot threads start
        everything from now on."""
        self.dead = True
        from pilot.log import get_logger

        if (self.units or self.sent) and not self.closing:
            get_logger().error("native spawner ended unexpectedly; its units fail, slot threads take over",
                               running=len(self.units), queued=len(self.sent), returncode=self.proc.poll())
        now = time.time()
        for unit in self.units.values():
            unit.signal_group(signal.SIGKILL)
            unit.end = unit.end or ("Failed", "the agent's native spawner ended unexpectedly")
            unit.proc.returncode = -signal.SIGKILL  # type: ignore[attr-defined]
            self.workers.running.pop(unit.id, None)
            self.workers.events.put(("ended", unit, -signal.SIGKILL, now))
        self.units.clear()
        with self.workers.cond:
            self.workers.ready.extendleft(reversed(list(self.sent.values())))
            self.sent.clear()
            self.workers.cond.notify_all()
        self.give_back(self.tokens)

    # --- the end --------------------------------------------------------------------------
    def take_back(self, ids: set[str], seconds: float = 1.0) -> list[dict[str, Any]]:
        """Take the units ``ids`` back from the spawner's queue (given back to the service,
        canceled): those it had not started, in order; the others run on."""
        tags = {tag for tag, record in self.sent.items() if record["id"] in ids}
        if not tags or self.dead:
            return []
        given: list[dict[str, Any]] = []
        self.given_up = given
        self.send(b"".join(b"D\0%d\n" % tag for tag in sorted(tags)))
        deadline = time.monotonic() + seconds
        while tags & self.sent.keys() and not self.dead and self._wait(deadline):
            self.read_events()  # each one is either dropped ("d") or started ("s") by now
        self.given_up = None
        return given

    def stop(self, deadline: float) -> list[dict[str, Any]]:
        """Start nothing more: the units the spawner had not started, in order."""
        self.given_up = []
        if not self.dead:
            self.quiet = False
            self.send(b"Q\n")
            while not self.quiet and not self.dead and self._wait(deadline):
                self.read_events()
        left = [*self.given_up, *self.sent.values()]
        self.sent.clear()
        self.given_up = None
        return left

    def wait_running(self, deadline: float) -> None:
        """Read events until no unit of the spawner runs, or ``deadline``."""
        while self.units and not self.dead and self._wait(deadline):
            self.read_events()

    def close(self, grace: float) -> None:
        """End the spawner (it kills what still runs) and read its last events."""
        deadline = time.monotonic() + grace
        with self.lock:
            self.closing = True
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
        while not self.dead and self._wait(deadline):
            self.read_events()
        if not self.dead:
            self.proc.kill()
        self.dead = True
        self.proc.wait()

    def _wait(self, deadline: float) -> bool:
        """Wait for output until ``deadline``; False once it passed."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        select.select([self.out_fd], [], [], left)
        return True
