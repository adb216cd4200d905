"""The agent's side of node executors (``pilot.agent.executor``): one long-running process per
other node of the allocation, started once through the remote launch method, so a single-slot
unit there costs two JSON lines instead of one launcher process (``srun``, ``blaunch``,
``pbsdsh``) of its own.

The JSON lines travel over the launcher's stdin and stdout (``srun``, ``blaunch``), or, for a
launcher that passes neither on (``pbsdsh``: its method says ``node_stdio = False``), over a TCP
connection the executor makes back to the agent, proving itself with a token read from a
private file in the pilot's sandbox. The first message tells the executor the agent's
environment, which its units then inherit (``pbsdsh`` starts tasks with the job's original
environment, not the agent's).

An executor that cannot start, or dies, is *lost*: units it had started end ``Failed`` with the
reason; the slot workers start a new one for the node (``pilot.agent.workers``), or go back to
the per-unit launch method.
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, Protocol

from pilot.agent.units import StartError, exit_reason

_AGENT_SECRET = re.compile(r"^PILOT_\w*(PASSWORD|SECRET|TOKEN)")
READY_TIMEOUT = 60.0  # seconds a slot worker waits for a new executor before falling back
EXECUTOR_ARGV = (sys.executable, "-m", "pilot.agent.executor")


class NodeLauncher(Protocol):
    """A launch method that can run any argv as one task on a given node (``SrunLaunch``,
    ``BlaunchLaunch``, ``PbsdshLaunch``). One whose attribute ``node_stdio`` is False does not
    pass stdin and stdout through: its executors connect back instead."""

    def node_argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """The argv that runs ``argv`` on ``host``."""


def node_launcher(method: object) -> NodeLauncher | None:
    """``method`` when it can start executors, else None."""
    return method if callable(getattr(method, "node_argv", None)) else None  # type: ignore[return-value]


def uses_stdio(launcher: object) -> bool:
    """True when ``launcher`` passes the executor's stdin and stdout through."""
    return bool(getattr(launcher, "node_stdio", True))


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
    """One executor process on ``host``, and the units it runs. With ``stdio`` False it talks
    over a connection the executor makes back, finding its token in ``token_dir``."""

    def __init__(self, host: str, on_node: Callable[[Sequence[str]], list[str]],
                 log: Callable[..., Any] | None = None, *, stdio: bool = True, token_dir: str | None = None) -> None:
        self.host, self.on_node, self.log = host, on_node, log
        self.cond = threading.Condition()
        self.units: dict[str, RemoteUnit] = {}
        self.ready = False
        self.lost: str | None = None
        self.stderr: collections.deque[str] = collections.deque(maxlen=5)
        self.write_lock = threading.Lock()
        self.closing = False
        self.stdin: IO[bytes] | None = None
        self.conn: socket.socket | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        listener = None
        argv = list(EXECUTOR_ARGV)
        if not stdio:
            try:
                listener, token, token_file = self._listen(token_dir)
            except OSError as exc:
                self.lost = f"node executor on {host} lost: cannot listen for it: {exc}"
                return
            argv += ["--connect", f"{socket.gethostname()}:{listener.getsockname()[1]}", "--token-file", token_file]
        argv = on_node(argv)
        try:
            self.proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE if stdio else subprocess.DEVNULL,
                                         stdout=subprocess.PIPE if stdio else subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, process_group=0)
        except OSError as exc:
            self.lost = f"node executor on {host} lost: cannot start {argv[0]}: {exc}"
            if listener is not None:
                listener.close()
                os.unlink(token_file)
            return
        threading.Thread(target=self._read_stderr, args=(self.proc.stderr,), name=f"pilot-executor-{host}-err",
                         daemon=True).start()
        if listener is None:
            self.stdin = self.proc.stdin
            self._send_environ()
            threading.Thread(target=self._read, args=(self.proc, self.proc.stdout), name=f"pilot-executor-{host}",
                             daemon=True).start()
        else:
            threading.Thread(target=self._accept, args=(self.proc, listener, token, token_file),
                             name=f"pilot-executor-{host}", daemon=True).start()

    def _listen(self, token_dir: str | None) -> tuple[socket.socket, str, str]:
        """A listening socket on every interface, and a fresh token in a 0600 file."""
        token = secrets.token_hex(32)
        path = os.path.join(token_dir or ".", f".pilot-executor-{secrets.token_hex(8)}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        try:
            listener = socket.create_server(("", 0), backlog=4)
        except OSError:
            os.unlink(path)
            raise
        return listener, token, path

    def _accept(self, proc: subprocess.Popen[bytes], listener: socket.socket, token: str, token_file: str) -> None:
        """Wait for the executor's connection (the first that shows the token), then read it."""
        threading.Thread(target=self._watch, args=(proc, listener), daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT
        conn = events = None
        try:
            while conn is None and time.monotonic() < deadline:
                listener.settimeout(max(0.1, deadline - time.monotonic()))
                candidate, _addr = listener.accept()
                candidate.settimeout(10.0)
                reader = candidate.makefile("rb")  # the one reader: it may already hold the first events
                try:
                    shown = reader.readline(200).strip()
                except OSError:  # silent for 10 s, or gone
                    shown = b""
                if shown and hmac.compare_digest(shown, token.encode()):
                    candidate.settimeout(None)
                    conn, events = candidate, reader
                else:  # not our executor: hang up (the reader holds the socket open too)
                    reader.close()
                    candidate.close()
        except OSError as exc:  # timed out, or closed by _watch when the launcher ended first
            detail = f"launcher ended with code {proc.returncode}" if proc.poll() is not None else \
                f"no connection: {exc}"
            self._lose(detail + (f" ({self.stderr[-1]})" if self.stderr else ""))
            return
        finally:
            listener.close()
            with contextlib.suppress(OSError):
                os.unlink(token_file)
        if conn is None or events is None:
            self._lose(f"no connection after {READY_TIMEOUT:g} s")
            return
        with self.write_lock:
            self.conn = conn
            self.stdin = conn.makefile("wb")
        if self.closing or self.lost is not None:
            self._shutdown()
        self._send_environ()
        self._read(proc, events)

    def _watch(self, proc: subprocess.Popen[bytes], listener: socket.socket) -> None:
        """A launcher that ends before its executor connected ends the wait for it."""
        proc.wait()
        if self.conn is None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _send_environ(self) -> None:
        """The agent's environment, for the executor's units, without the agent's own secrets
        (``PILOT_*PASSWORD*``: units never need the store's password, and a ``pbsdsh``
        executor's connection is plain TCP inside the cluster)."""
        environ = {k: v for k, v in os.environ.items() if not _AGENT_SECRET.match(k)}
        self.send({"op": "environ", "environ": environ})

    def _shutdown(self) -> None:
        """End the connection (the executor then stops, as at the end of its stdin)."""
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.shutdown(socket.SHUT_RDWR)

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
        with self.write_lock:
            if self.stdin is not None:
                with contextlib.suppress(OSError):
                    self.stdin.close()
            if self.conn is not None:
                with contextlib.suppress(OSError):
                    self.conn.shutdown(socket.SHUT_WR)

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
        self._shutdown()  # a launcher killed need not end its task (pbsdsh): the lost connection does
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(signum)
            except ProcessLookupError:
                pass

    def _read(self, proc: subprocess.Popen[bytes], stdout: IO[bytes]) -> None:
        with contextlib.suppress(OSError):  # a reset connection ends it as EOF does
            for line in stdout:
                try:
                    event = json.loads(line)
                    self._event(event)
                except (ValueError, KeyError, TypeError):
                    self.stderr.append(f"bad event {line[:200]!r}")
        try:
            returncode = proc.wait(None if self.conn is None else 5.0)
        except subprocess.TimeoutExpired:  # the connection ended, the launcher lingers
            self._kill()
            returncode = proc.wait()
        detail = exit_reason(returncode)[1] if returncode else "exited"
        if self.conn is not None:
            detail = f"connection closed (launcher {detail})"
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
