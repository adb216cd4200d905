"""The fork adaptor (``fork://localhost``, ``local://``): the agent as a detached local process.

The agent makes itself a session leader, so it outlives the client, and cancel ends the whole
session: the agent and every unit it started, then every process that still carries the pilot's
marker variable in its environment (a unit's ``setsid`` children leave the session). The native
id is ``<pid>@<host>/<pilot id>``: pids are reused, so a pid alone never decides what to signal.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.parse

from pilot.errors import PilotError
from pilot.plugin import hookimpl
from pilot.plugin.types import NativeStatus, PilotJobRequest, ResourceAdaptorRecord
from pilot.procs import cmdline_contains, is_alive, kill_marked, kill_session
from pilot.states import State

# in the agent's environment, so in every unit's: finds what a unit started outside the session
MARKER = "PILOT_FORK_PILOT_ID"
_LOCAL_NAMES = {"", "localhost", "127.0.0.1", "::1"}
# sh starts the agent in the background and prints its pid; the agent is then no child of ours.
_DETACH = '"$@" </dev/null >>"$PILOT_AGENT_LOG" 2>&1 & echo $!'


def max_fork_slots() -> int:
    """The most slots a fork pilot may ask for: 16 per CPU of this host, at least 4096 (more
    would only oversubscribe the host, and the agent keeps one entry per slot)."""
    return max(4096, 16 * (os.cpu_count() or 1))


class ForkAdaptor:
    """Runs the agent on this host."""

    def __init__(self, service_url: str) -> None:
        host = urllib.parse.urlsplit(service_url).hostname or ""
        if host not in _LOCAL_NAMES and host not in (socket.gethostname(), socket.getfqdn()):
            raise PilotError(f"the fork adaptor runs pilots on this host only, not on {host!r}",
                             key="service_url")
        self.host = socket.gethostname()

    def submit(self, request: PilotJobRequest) -> str:
        """Start the agent detached; return ``<pid>@<host>/<pilot id>``."""
        limit = max_fork_slots()
        if request.description.number_of_processes > limit:
            raise PilotError(f"number_of_processes {request.description.number_of_processes} is more than a "
                             f"fork pilot offers on this host (at most {limit}: 16 per CPU, at least 4096)",
                             key="number_of_processes")
        request.sandbox.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **request.environment, "PILOT_AGENT_LOG": str(request.sandbox / "agent.log"),
               MARKER: request.pilot_id}
        try:
            out = subprocess.run(["/bin/sh", "-c", _DETACH, "sh", *request.agent_argv], cwd=request.sandbox,
                                 env=env, stdout=subprocess.PIPE, check=True, timeout=30).stdout
            pid = int(out.strip())
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            raise PilotError(f"could not start the agent: {exc}") from exc
        return f"{pid}@{self.host}/{request.pilot_id}"

    def _local_pid(self, native_id: str) -> int | None:
        pid, _, where = native_id.partition("@")
        host, _, _pilot = where.partition("/")
        return int(pid) if host == self.host and pid.isdigit() else None

    @staticmethod
    def _is_agent(pid: int, native_id: str) -> bool:
        """True if ``pid`` is still the agent of the pilot named in ``native_id``."""
        pilot_id = native_id.partition("/")[2]
        return cmdline_contains(pid, b"pilot.agent") and cmdline_contains(pid, pilot_id.encode())

    def status(self, native_id: str) -> NativeStatus:
        """Running while the agent process lives; Failed once it is gone; Unknown elsewhere."""
        pid = self._local_pid(native_id)
        if pid is None:
            return NativeStatus(State.Unknown, f"agent runs on another host ({native_id})")
        if is_alive(pid) and self._is_agent(pid, native_id):
            return NativeStatus(State.Running)
        # a process in the middle of execve (a site's python wrapper exec'ing the agent) can
        # show an empty command line for an instant: look once more before calling it gone
        time.sleep(0.05)
        if is_alive(pid) and self._is_agent(pid, native_id):
            return NativeStatus(State.Running)
        return NativeStatus(State.Failed, f"agent process {pid} is gone")

    def cancel(self, native_id: str) -> None:
        """End the agent's session: the agent first (it drains), then anything left."""
        pid = self._local_pid(native_id)
        if pid is None:
            raise PilotError(f"cannot cancel {native_id}: the fork adaptor reaches this host only")
        if self._is_agent(pid, native_id):
            kill_session(pid)
        elif not is_alive(pid):
            # the agent died (kill -9): its units keep its session id, which the kernel does not
            # hand to a new process while they live, so they are ours to end
            kill_session(pid, grace=0)
        # processes that left the session (setsid, daemons) still carry the agent's environment
        kill_marked(f"{MARKER}={native_id.partition('/')[2]}".encode())


@hookimpl
def pilot_resource_adaptors() -> list[ResourceAdaptorRecord]:
    """Register the fork adaptor for ``fork://`` and ``local://``."""
    return [ResourceAdaptorRecord(name="fork", schemes=("fork", "local"), factory=ForkAdaptor)]
