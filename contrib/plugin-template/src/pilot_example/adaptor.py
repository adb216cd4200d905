"""The ``example://`` resource adaptor.

As stamped it runs the agent as a local process (``example://localhost``) and passes the adaptor
conformance suite; replace the bodies of ``submit``, ``status`` and ``cancel`` with calls to your
batch system or cloud, keeping the contracts in their docstrings.

The native id is ``<pid>:<start time>@<host>``: the agent's pid, its start time (so a reused pid
is never taken for the agent) and the host. Everything ``status`` and ``cancel`` need is in it,
so any process on this host can ask, long after the one that submitted has exited.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.parse

from pilot.errors import PilotError
from pilot.plugin.types import NativeStatus, PilotJobRequest
from pilot.states import State

#: Seconds the agent gets to end its units after SIGTERM before everything left is killed.
GRACE = 10.0
_LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


class ExampleAdaptor:
    """A resource adaptor (``pilot.plugin.types.ResourceAdaptor``) for ``example://localhost``."""

    def __init__(self, service_url: str) -> None:
        host = urllib.parse.urlsplit(service_url).hostname or "localhost"
        if host not in _LOCAL_NAMES and host != socket.gethostname():
            raise PilotError(f"example: pilots run on this host only, not on {host!r}", key="service_url")
        self.host = socket.gethostname()

    def submit(self, request: PilotJobRequest) -> str:
        """Start ``request.agent_argv`` in ``request.sandbox`` with ``request.environment``;
        return the job's native id. Raise ``PilotError`` with the system's message when the
        job is refused (the pilot fails with it). A batch script also runs
        ``request.pre_commands`` (site configuration) before the agent."""
        if request.description.queue:
            raise PilotError(f"example: no queue {request.description.queue!r} here (this adaptor has no queues)",
                             key="queue")
        request.sandbox.mkdir(parents=True, exist_ok=True)
        try:
            with open(request.sandbox / "agent.log", "ab") as log:
                agent = subprocess.Popen(request.agent_argv, cwd=request.sandbox,
                                         env={**os.environ, **request.environment}, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise PilotError(f"example: could not start the agent: {exc}") from exc
        started = start_time(agent.pid)  # readable: our child stays a zombie until reaped
        threading.Thread(target=agent.wait, name=f"reap-{agent.pid}", daemon=True).start()
        return f"{agent.pid}:{started}@{self.host}"

    def status(self, native_id: str) -> NativeStatus:
        """The job's state as the system sees it: ``Running`` while the agent lives, a final
        state once the job is gone (a live pilot then fails with the message), ``Unknown``
        when this process cannot tell."""
        pid, started, host = parse_native_id(native_id)
        if host != self.host:
            return NativeStatus(State.Unknown, f"example: the agent runs on {host}, not on this host")
        if start_time(pid) == started:
            return NativeStatus(State.Running)
        return NativeStatus(State.Failed, f"example: agent process {pid} is gone")

    def cancel(self, native_id: str) -> None:
        """End the job and every process it started; a job already gone is not an error."""
        pid, started, host = parse_native_id(native_id)
        if host != self.host:
            raise PilotError(f"example: cannot cancel {native_id} from {self.host}")
        now = start_time(pid)
        if now is not None and now != started:
            return  # the pid belongs to another process now: the job and its session ended long ago
        if now == started:
            _kill([pid], signal.SIGTERM)  # the agent ends its units and records the pilot
            _kill([pid], signal.SIGCONT)  # a stopped (hung) agent gets the SIGTERM too
            deadline = time.monotonic() + GRACE
            while start_time(pid) == started and time.monotonic() < deadline:
                time.sleep(0.05)
        # the agent leads its own session (start_new_session): whatever is left of it goes,
        # units included (they have process groups of their own inside the session)
        _kill(session_members(pid), signal.SIGKILL)


def parse_native_id(native_id: str) -> tuple[int, int, str]:
    """``(pid, start time, host)`` of a native id made by ``submit``."""
    try:
        process, host = native_id.split("@", 1)
        pid, started = process.split(":", 1)
        return int(pid), int(started), host
    except ValueError:
        raise PilotError(f"example: not a native id of this adaptor: {native_id!r}") from None


def _stat(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()


def start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), or None when it is gone or a zombie."""
    fields = _stat(pid)
    if fields is None or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def session_members(sid: int) -> list[int]:
    """Every live process of session ``sid``."""
    members = []
    for entry in os.listdir("/proc"):
        fields = _stat(int(entry)) if entry.isdigit() else None
        if fields is not None and int(fields[3]) == sid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry))
    return members


def _kill(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
