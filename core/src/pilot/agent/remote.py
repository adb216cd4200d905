"""The agent's side of node executors (``pilot.agent.executor``): one long-running process per
other node of the allocation, started once through the remote launch method, so a single-slot
unit there costs two JSON lines instead of one launcher process (``srun``) of its own.

An executor that cannot start, or dies, is *lost*: units it had started end ``Failed`` with the
reason, and the slot workers go back to the per-unit launch method for that node.
"""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, Protocol

from pilot.agent.units import StartError, exit_reason

READY_TIMEOUT = 60.0  # seconds a slot worker waits for a new executor before falling back
EXECUTOR_ARGV = (sys.executable, "-m", "pilot.agent.executor")


class NodeLauncher(Protocol):
    """A launch method that can run any argv as one task on a given node (``SrunLaunch``)."""

    def node_argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """The argv that runs ``argv`` on ``host``, with stdin and stdout passed through."""


def node_launcher(method: object) -> NodeLauncher | None:
    """``method`` when it can start executors, else None."""
    return method if callable(getattr(method, "node_argv", None)) else None  # type: ignore[return-value]


class RemoteUnit:
    """A unit run by a node executor: ``pid``, ``wait()`` and ``signal_group()`` as the slot
    workers use them on a local process."""

    def __init__(self, executor: NodeExecutor, unit_id: str) -> None:
        self.executor, self.id = executor, unit_id
        self.pid = 0
        self.returncode: int | None = None
        self.error: StartError | None = None
        self.lost: str | None = None   # the executor's loss, when it ended the unit
        self.started = threading.Event()
        self.ended = threading.Event()

    def wait_started(self) -> None:
        """Block until the executor started the unit; ``StartError`` when it could not."""
        self.started.wait()
        if self.error is not None:
            raise self.error

    def wait(self) -> int:
        """Block until the unit ended; its return code (``-SIGKILL`` when its executor was lost)."""
        self.ended.wait()
        return self.returncode if self.returncode is not None else -signal.SIGKILL

    def signal_group(self, signum: int) -> None:
        """Ask the executor to signal the unit's process group."""
        if not self.ended.is_set():
            self.executor.send({"op": "signal", "id": self.id, "signum": int(signum)})


class NodeExecutor:
    """One executor process on ``host``, and the units it runs."""

    def __init__(self, host: str, on_node: Callable[[Sequence[str]], list[str]],
                 log: Callable[..., Any] | None = None) -> None:
        self.host, self.on_node, self.log = host, on_node, log
        argv = on_node(EXECUTOR_ARGV)
        self.cond = threading.Condition()
        self.units: dict[str, RemoteUnit] = {}
        self.ready = False
        self.lost: str | None = None
        self.stderr: collections.deque[str] = collections.deque(maxlen=5)
        self.write_lock = threading.Lock()
        self.closing = False
        self.stdin: IO[bytes] | None = None
        try:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                process_group=0)
        except OSError as exc:
            self.proc = None
            self.lost = f"node executor on {host} lost: cannot start {argv[0]}: {exc}"
            return
        self.stdin = self.proc.stdin
        threading.Thread(target=self._read, args=(self.proc, self.proc.stdout), name=f"pilot-executor-{host}",
                         daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(self.proc.stderr,), name=f"pilot-executor-{host}-err",
                         daemon=True).start()

    def usable(self, timeout: float = READY_TIMEOUT) -> bool:
        """Wait until the executor said it is ready; False once it is lost (or never ready)."""
        with self.cond:
            if not self.ready and self.lost is None:
                self.cond.wait_for(lambda: self.ready or self.lost is not None, timeout)
                if not self.ready and self.lost is None:
                    self.lost = f"node executor on {self.host} lost: not ready after {timeout:g} s"
                    self._kill()
            return self.lost is None

    def start(self, unit_id: str, description: dict[str, Any], sandbox: str) -> RemoteUnit | None:
        """Ask the executor to start a unit; None when it is lost (nothing was sent)."""
        unit = RemoteUnit(self, unit_id)
        with self.cond:
            if self.lost is not None:
                return None
            self.units[unit_id] = unit
        self.send({"op": "start", "id": unit_id, "description": description, "sandbox": sandbox})
        return unit

    def send(self, message: dict[str, Any]) -> None:
        """Write one request line; a broken pipe means the executor is lost."""
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        try:
            with self.write_lock:
                self.stdin.write(data)  # type: ignore[union-attr]
                self.stdin.flush()  # type: ignore[union-attr]
        except (OSError, ValueError, AttributeError) as exc:
            self._lose(f"cannot write to it: {exc}")

    def close(self) -> None:
        """Tell the executor to stop (end of its stdin): it kills its units and exits."""
        self.closing = True
        if self.stdin is not None:
            with self.write_lock:
                try:
                    self.stdin.close()
                except OSError:
                    pass

    def finish(self, deadline: float) -> None:
        """After ``close()``: wait for the executor until ``deadline`` (monotonic), then kill it."""
        if self.proc is None:
            return
        for signum in (signal.SIGTERM, signal.SIGKILL):
            try:
                self.proc.wait(max(0.0, deadline - time.monotonic()))
                return
            except subprocess.TimeoutExpired:
                self._kill(signum)
                deadline = time.monotonic() + 1.0
        self.proc.wait()

    def _kill(self, signum: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(signum)
            except ProcessLookupError:
                pass

    def _read(self, proc: subprocess.Popen[bytes], stdout: IO[bytes]) -> None:
        for line in stdout:
            try:
                event = json.loads(line)
                self._event(event)
            except (ValueError, KeyError, TypeError):
                self.stderr.append(f"bad event {line[:200]!r}")
        returncode = proc.wait()
        detail = exit_reason(returncode)[1] if returncode else "exited"
        if self.stderr:
            detail += f" ({self.stderr[-1]})"
        self._lose(detail)

    def _read_stderr(self, stderr: IO[bytes]) -> None:
        for raw in stderr:
            line = raw.decode(errors="replace").strip()
            if line:
                self.stderr.append(line)
                if self.log is not None:
                    self.log("node executor says", host=self.host, line=line)

    def _event(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "ready":
            with self.cond:
                self.ready = True
                self.cond.notify_all()
            return
        with self.cond:
            unit = self.units.get(event["id"])
            if unit is None:
                return
            if kind != "started":
                del self.units[unit.id]
        if kind == "started":
            unit.pid = int(event["pid"])
        elif kind == "ended":
            unit.returncode = int(event["returncode"])
            unit.ended.set()
        else:
            unit.error = StartError(str(event["reason"]), event.get("exit_code"))
            unit.ended.set()
        unit.started.set()

    def _lose(self, detail: str) -> None:
        """Mark the executor lost: every unit it holds ends (or fails to start) with the reason."""
        with self.cond:
            if self.lost is None:
                self.lost = f"node executor on {self.host} lost: {detail}"
            units, self.units = list(self.units.values()), {}
            self.cond.notify_all()
        if self.log is not None and not self.closing:
            self.log("node executor lost", host=self.host, reason=self.lost)
        self._kill()
        groups = [f"-{unit.pid}" for unit in units if unit.pid]
        if groups and not self.closing:  # its orphans must not outlive the units' Failed
            try:
                subprocess.run(self.on_node(["kill", "-KILL", "--", *groups]), stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=30, check=False)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for unit in units:
            unit.lost = self.lost
            if not unit.started.is_set():
                unit.error = StartError(self.lost)
            unit.ended.set()
            unit.started.set()
