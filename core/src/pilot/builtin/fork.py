"""The fork adaptor (``fork://localhost``, ``local://``): the agent as a detached local process.

The agent makes itself a session leader, so it outlives the client, and cancel ends the whole
session: the agent and every unit it started. The native id is ``<pid>@<host>``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.parse

from pilot.builtin.procs import cmdline_contains, is_alive, kill_session
from pilot.errors import PilotError
from pilot.plugin import hookimpl
from pilot.plugin.types import NativeStatus, PilotJobRequest, ResourceAdaptorRecord
from pilot.states import State

_LOCAL_NAMES = {"", "localhost", "127.0.0.1", "::1"}
# sh starts the agent in the background and prints its pid; the agent is then no child of ours.
_DETACH = '"$@" </dev/null >>"$PILOT_AGENT_LOG" 2>&1 & echo $!'


class ForkAdaptor:
    """Runs the agent on this host."""

    def __init__(self, service_url: str) -> None:
        host = urllib.parse.urlsplit(service_url).hostname or ""
        if host not in _LOCAL_NAMES and host not in (socket.gethostname(), socket.getfqdn()):
            raise PilotError(f"the fork adaptor runs pilots on this host only, not on {host!r}",
                             key="service_url")
        self.host = socket.gethostname()

    def submit(self, request: PilotJobRequest) -> str:
        """Start the agent detached; return ``<pid>@<host>``."""
        request.sandbox.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **request.environment, "PILOT_AGENT_LOG": str(request.sandbox / "agent.log")}
        try:
            out = subprocess.run(["/bin/sh", "-c", _DETACH, "sh", *request.agent_argv], cwd=request.sandbox,
                                 env=env, stdout=subprocess.PIPE, check=True, timeout=30).stdout
            pid = int(out.strip())
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            raise PilotError(f"could not start the agent: {exc}") from exc
        return f"{pid}@{self.host}"

    def _local_pid(self, native_id: str) -> int | None:
        pid, _, host = native_id.partition("@")
        return int(pid) if host == self.host and pid.isdigit() else None

    def status(self, native_id: str) -> NativeStatus:
        """Running while the agent process lives; Failed once it is gone; Unknown elsewhere."""
        pid = self._local_pid(native_id)
        if pid is None:
            return NativeStatus(State.Unknown, f"agent runs on another host ({native_id})")
        if is_alive(pid) and cmdline_contains(pid, b"pilot.agent"):
            return NativeStatus(State.Running)
        return NativeStatus(State.Failed, f"agent process {pid} is gone")

    def cancel(self, native_id: str) -> None:
        """End the agent's session: the agent first (it drains), then anything left."""
        pid = self._local_pid(native_id)
        if pid is None:
            raise PilotError(f"cannot cancel {native_id}: the fork adaptor reaches this host only")
        if cmdline_contains(pid, b"pilot.agent"):
            kill_session(pid)
        elif not is_alive(pid):
            # the agent died (kill -9): its units keep its session id, which the kernel does not
            # hand to a new process while they live, so they are ours to end
            kill_session(pid, grace=0)


@hookimpl
def pilot_resource_adaptors() -> list[ResourceAdaptorRecord]:
    """Register the fork adaptor for ``fork://`` and ``local://``."""
    return [ResourceAdaptorRecord(name="fork", schemes=("fork", "local"), factory=ForkAdaptor)]
