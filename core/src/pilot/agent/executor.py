"""The node executor: ``python -m pilot.agent.executor``, one long-running process per other node
of a multi-node pilot, started once through that node's launcher (``srun ... --nodelist=<node>``,
``blaunch <node>``, ``pbsdsh -h <node>``).

It reads JSON lines on stdin and writes JSON lines on stdout, or, with ``--connect HOST:PORT
--token-file PATH`` (launchers that pass neither on), on a TCP connection to the agent that
begins with the token read from that file:

- in: ``{"op": "environ", "environ"}`` (the agent's environment: the units' from then on, but for
  the variables the launcher sets per node or task, ``OWN_VARIABLES``),
  ``{"op": "start", "id", "description", "sandbox"}``, ``{"op": "signal", "id", "signum"}``;
- out: ``{"event": "ready", "pid", "host"}`` once, then ``{"event": "started", "id", "pid"}``,
  ``{"event": "ended", "id", "returncode"}``, ``{"event": "failed", "id", "reason", "exit_code"}``.

Units start exactly as the agent starts them locally (``start_unit`` with the ``fork`` launch
method, asked of this process's plugin manager), each in a thread that then waits for it. End of
stdin means stop: every unit's group is killed, then exit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from typing import IO, Any

from pilot.agent.launching import LOCAL_LAUNCH_METHOD, LaunchMethods
from pilot.agent.spawn import ChildProcess
from pilot.agent.units import StartError, start_unit
from pilot.plugin.manager import PluginManager
from pilot.plugin.types import LaunchMethod

STOP_GRACE = 1.0  # seconds between SIGTERM and SIGKILL of the units when stdin closes
#: Prefixes of the variables this executor keeps its own values of (set per node or task).
OWN_VARIABLES = ("SLURM", "PBS_TASKNUM", "PBS_NODENUM", "PBS_VNODENUM", "LSF_PM_", "HOSTNAME", "TMPDIR",
                 "FAKE_BATCH_HOST")


def adopt_environ(environ: dict[str, str]) -> None:
    """Make ``environ`` this process's environment, keeping its own values of ``OWN_VARIABLES``."""
    own = {k: v for k, v in os.environ.items() if k.startswith(OWN_VARIABLES)}
    wanted = {k: v for k, v in environ.items() if k not in own}
    for name in [k for k in os.environ if k not in wanted and k not in own]:
        del os.environ[name]
    os.environ.update(wanted)


class Executor:
    """Starts, waits for and signals the units the agent sends; reports on ``out_fd``."""

    def __init__(self, out_fd: int) -> None:
        self.out_fd = out_fd
        self.lock = threading.Lock()
        self.procs: dict[str, ChildProcess] = {}
        self.host = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        self.methods: LaunchMethods | None = None  # loaded with the first unit
        self.stopping = False

    def emit(self, **event: Any) -> None:
        """Write one event line (whole lines only, so threads never interleave)."""
        data = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        with self.lock:
            try:
                while data:
                    data = data[os.write(self.out_fd, data):]
            except OSError:  # the agent is gone: stdin's end will stop us
                pass

    def handle(self, line: bytes) -> None:
        """Act on one request line."""
        try:
            request = json.loads(line)
            op = request["op"]
        except (ValueError, KeyError, TypeError) as exc:
            print(f"pilot executor: bad request {line[:200]!r}: {exc}", file=sys.stderr, flush=True)
            return
        if op == "start":
            threading.Thread(target=self.run_unit, args=(request,), daemon=True).start()
        elif op == "signal":
            self.signal(str(request["id"]), int(request["signum"]))
        elif op == "environ":  # before any start: no unit is being started while it changes
            adopt_environ({str(k): str(v) for k, v in dict(request["environ"]).items()})

    def local_method(self) -> LaunchMethod:
        """The local launch method, asked of this process's plugin manager (which honours
        ``PILOT_DISABLE_PLUGINS`` as the agent's does); a ``PilotError`` naming why when none."""
        with self.lock:
            if self.methods is None:
                self.methods = LaunchMethods(PluginManager())
            methods = self.methods
        return methods[LOCAL_LAUNCH_METHOD]

    def run_unit(self, request: dict[str, Any]) -> None:
        """Start one unit, report it, wait for it, report its end."""
        unit_id = str(request["id"])
        try:
            proc = start_unit(request["description"], request["sandbox"], [self.host], self.local_method())
        except StartError as exc:
            self.emit(event="failed", id=unit_id, reason=str(exc), exit_code=exc.exit_code)
            return
        except Exception as exc:  # never lose a unit to an unexpected error
            self.emit(event="failed", id=unit_id, reason=f"cannot start unit: {exc}", exit_code=None)
            return
        with self.lock:
            self.procs[unit_id] = proc
            if self.stopping:  # started while we stop: it must not outlive us
                proc.signal_group(signal.SIGKILL)
        self.emit(event="started", id=unit_id, pid=proc.pid)
        returncode = proc.wait()
        with self.lock:
            self.procs.pop(unit_id, None)
        self.emit(event="ended", id=unit_id, returncode=returncode)

    def signal(self, unit_id: str, signum: int) -> None:
        """Send ``signum`` to a running unit's process group."""
        with self.lock:
            proc = self.procs.get(unit_id)
            if proc is not None:
                proc.signal_group(signum)

    def stop(self) -> None:
        """SIGTERM every unit's group, SIGKILL what is left after ``STOP_GRACE``."""
        with self.lock:
            self.stopping = True
            procs = list(self.procs.values())
        for proc in procs:
            proc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline:  # each unit's own thread reaps it and forgets it
            with self.lock:
                procs = list(self.procs.values())
            if not procs:
                return
            time.sleep(0.01)
        for proc in procs:
            proc.signal_group(signal.SIGKILL)


class _Stop(Exception):
    """SIGTERM: stop as if stdin had closed."""


def _raise_stop(_signum: int, _frame: object) -> None:
    raise _Stop


def _connect(argv: list[str]) -> tuple[int, IO[bytes]]:
    """``--connect HOST:PORT --token-file PATH``: the connection to the agent, token sent."""
    if len(argv) != 4 or argv[0] != "--connect" or argv[2] != "--token-file":
        raise SystemExit("usage: python -m pilot.agent.executor [--connect HOST:PORT --token-file PATH]")
    host, _, port = argv[1].rpartition(":")
    with open(argv[3], "rb") as handle:
        token = handle.readline().strip()
    conn = socket.create_connection((host, int(port)), timeout=60)
    conn.settimeout(None)
    conn.sendall(token + b"\n")
    return os.dup(conn.fileno()), conn.makefile("rb")


def main(argv: list[str] | None = None) -> int:
    """Serve requests from stdin (or the agent's connection) until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # srun forwards ^C; the agent decides
    args = sys.argv[1:] if argv is None else argv
    out_fd, requests = _connect(args) if args else (os.dup(1), sys.stdin.buffer)
    os.dup2(2, 1)  # a stray print must not corrupt the event stream
    executor = Executor(out_fd)
    signal.signal(signal.SIGTERM, _raise_stop)
    executor.emit(event="ready", pid=os.getpid(), host=executor.host)
    try:
        for line in requests:
            if line.strip():
                executor.handle(line)
    except (_Stop, OSError):
        pass
    executor.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
