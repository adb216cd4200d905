"""The SSH resource adaptor (``ssh://[user@]host[:port]``): the agent as a detached process on a
host without a batch system, reached over SSH (BigJob's ``ssh://`` adaptor).

- **submit** logs in, creates the sandbox (the login's umask applies), runs the site's
  ``pre_commands``, checks that the Python can run the agent, and starts it with ``nohup`` and
  ``setsid`` (its own session), its output in ``<sandbox>/agent.log``. Native id:
  ``<pid>@<host>/<pilot id>``.
- **status** is ``Running`` while that pid is still this pilot's agent (its command line names
  the pilot), ``Failed`` once it is gone; the store's heartbeat covers the rest (a host that
  cannot be reached raises, and the heartbeat decides).
- **cancel** SIGTERMs the agent (it drains), then SIGKILLs what is left of its session; a pid
  that is not this pilot's agent is never signalled.

The agent reaches the coordination store from the remote host: Redis, or the embedded SQLite
file when the host sees it (this machine, or a shared filesystem). An SQLite store the host does
not see, or cannot write, fails the pilot at ``create_pilot`` with the reason.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import sys
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pilot.errors import PilotError
from pilot.log import get_logger
from pilot.plugin.types import NativeStatus, PilotJobRequest
from pilot.states import State
from pilot.urls import redact
from pilot_ssh import scripts
from pilot_ssh.connection import Connections, Target, parse_service_url

#: The Python that runs the agent when neither the description nor the site names one.
DEFAULT_PYTHON = "python3"
#: Seconds the agent gets to drain after SIGTERM before its session is killed.
CANCEL_GRACE = 5.0
#: Seconds during which status() does not try again a host it could not reach (the store's
#: heartbeat decides meanwhile), so a client polling many pilots is not held up by a dead host.
STATUS_BACKOFF = 10.0
#: ``PILOT_*`` variables that name things on this machine: not sent to the remote host.
LOCAL_ONLY = frozenset({"PILOT_HOME", "PILOT_SITE_CONFIG", "PILOT_COORDINATION_URL", "PILOT_REDIS_CREDENTIALS",
                        "PILOT_SSH_KNOWN_HOSTS", "PILOT_SSH_IDENTITY", "PILOT_SSH_CONFIG", "PILOT_AGENT_LOG",
                        "PILOT_PSIJ_WORK_DIR"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NATIVE = re.compile(r"^(\d+)@([^/]+)/(.+)$")


def _field(description: Any, key: str) -> Any:
    """A key of a description (a frozen dataclass, or a dict with attribute access)."""
    value = getattr(description, key, None)
    if value is None and isinstance(description, Mapping):
        value = description.get(key)
    return value


def same_host(url_a: str, url_b: str) -> bool:
    """Whether two ``ssh://`` URLs name the same login (user, host and port as written)."""
    try:
        a, b = parse_service_url(url_a), parse_service_url(url_b)
    except PilotError:
        return False
    return (a.host.lower(), a.port, a.user) == (b.host.lower(), b.port, b.user)


def agent_python(request: PilotJobRequest) -> tuple[str, tuple[str, ...]]:
    """The Python that runs the agent on the remote host, and the ``pre_commands``: the
    description's ``extra.python``; else the site resource's ``python`` (the resource the
    description names, or one whose ``service_url`` is this same ``ssh://`` URL); else
    ``python3`` as the login's ``PATH`` finds it."""
    desc = request.description
    extra = _field(desc, "extra") or {}
    pre = tuple(request.pre_commands)
    if request.agent_argv[0] != sys.executable:  # the named resource's python (pilot.site)
        python: str | None = request.agent_argv[0]
    else:
        python = None
        from pilot.site import load_resources

        resources = load_resources()
        named = _field(desc, "resource")
        site = resources.get(named) if named else next(
            (r for _, r in sorted(resources.items())
             if same_host(str(r.defaults.get("service_url", "")), str(_field(desc, "service_url")))), None)
        if site is not None:
            python, pre = site.python, pre or site.pre_commands
    chosen = extra.get("python") or python or DEFAULT_PYTHON
    if not isinstance(chosen, str):
        raise PilotError(f"extra.python must be a path, got {chosen!r}", key="extra")
    return chosen, pre


def forwarded_environment(request: PilotJobRequest, store_url: str) -> dict[str, str]:
    """What the agent's environment gets on top of the login's: the description's
    ``environment``, this process's ``PILOT_*`` settings (log level, heartbeat, Redis password
    ...) except those naming local files, and the Redis store's password when this process
    knows it. Sent on the script's standard input, never on a command line."""
    env = {k: v for k, v in os.environ.items() if k.startswith("PILOT_") and k not in LOCAL_ONLY}
    if urllib.parse.urlsplit(store_url).scheme in ("redis", "rediss") and "PILOT_REDIS_PASSWORD" not in env:
        try:
            from pilot_redis.config import find_password, parse_url

            password = find_password(parse_url(store_url))
        except Exception:  # no pilot-redis here, or no password: the agent finds its own
            password = None
        if password:
            env["PILOT_REDIS_PASSWORD"] = password
    env.update(request.environment)
    for name in env:
        if not _NAME.match(name):
            raise PilotError(f"environment variable name {name!r} cannot be exported by a shell", key="environment")
    return env


def store_url_of(argv: tuple[str, ...]) -> str:
    """The ``--store`` value of the agent's argv."""
    for flag, value in itertools.pairwise(argv):
        if flag == "--store":
            return value
    raise PilotError("the agent command line has no --store")


class SSHAdaptor:
    """Runs the agent on one SSH host; one per ``service_url`` and session."""

    def __init__(self, service_url: str) -> None:
        self.service_url = service_url
        self.target = parse_service_url(service_url)
        self.connections = Connections()
        self._targets: dict[str, Target] = {}  # pilot id -> target with the pilot's extra keys
        self._logs: dict[str, str] = {}        # pilot id -> its agent.log, for reasons
        self._unreachable: dict[Target, tuple[float, str]] = {}  # target -> (until, why)

    def _target_for(self, pilot_id: str) -> Target:
        return self._targets.get(pilot_id) or self.target.with_options({})

    def submit(self, request: PilotJobRequest) -> str:
        """Start the agent detached on the host; return ``<pid>@<host>/<pilot id>``."""
        target = self.target.with_options(_field(request.description, "extra") or {})
        python, pre_commands = agent_python(request)
        argv = (python, *request.agent_argv[1:])
        store_url = store_url_of(argv)
        scheme = urllib.parse.urlsplit(store_url).scheme
        env = forwarded_environment(request, store_url)
        sandbox = str(request.sandbox)
        probe = _sqlite_probe(store_url) if scheme == "sqlite" else None
        try:
            script = scripts.start(sandbox=sandbox, argv=argv, environment=env, pre_commands=pre_commands,
                                   store_url=store_url, pilot_id=request.pilot_id, probe=probe)
            status, out, err = self.connections.run(target, "sh -s", script)
        finally:
            if probe is not None:
                _remove(probe[1])
        marks = dict(line[len(scripts.MARK) + 1:].partition(" ")[::2] for line in out.splitlines()
                     if line.startswith(scripts.MARK + " "))
        if "pid" in marks and marks["pid"].strip().isdigit():
            self._targets[request.pilot_id] = target
            self._logs[request.pilot_id] = f"{sandbox}/agent.log"
            native_id = f"{int(marks['pid'])}@{self.target.host}/{request.pilot_id}"
            get_logger(pilot=request.pilot_id).info("agent started over SSH", native_id=native_id,
                                                    python=python)
            return native_id
        raise PilotError(self._why(marks, status, err, target, python=python, store_url=store_url, sandbox=sandbox))

    def _why(self, marks: Mapping[str, str], status: int, err: str, target: Target, *, python: str,
             store_url: str, sandbox: str) -> str:
        """The reason a start failed, with what to do about it."""
        where, user = target.where(), target.user or "the SSH user"
        howto = (f'name a Python that has it in the site configuration (python = "/path/to/bin/python" in a '
                 f'resource with service_url = "{self.service_url}") or in the description\'s extra.python')
        if "sandbox" in marks:
            return (f"cannot create the pilot sandbox {sandbox} on {where}: {marks['sandbox'].strip()}; set "
                    f"working_directory to an absolute path that {user} may write on that host")
        if "store-unshared" in marks or "store-readonly" in marks:
            path = urllib.parse.unquote(urllib.parse.urlsplit(store_url).path)
            problem = ("cannot read files beside it (another machine without a shared filesystem, or no permission)"
                       if "store-unshared" in marks else f"cannot write it or its directory as {user}")
            return (f"the embedded SQLite store {path} cannot coordinate a pilot on {where}: that host {problem}. "
                    "Use a store both sides reach: Redis (coordination_url redis://host:port, plugin pilot-redis), "
                    "or PILOT_HOME on a filesystem the host shares and the remote user may write")
        if "python" in marks:
            return (f"no Python {python!r} on {where}: pilot-core must be installed on that host for a Python 3.11+; "
                    f"{howto}")
        detail = next((v.strip() for k, v in marks.items() if k.startswith("check-")), "")
        if f"check-{scripts.NO_PILOT}" in marks:
            return (f"{python} on {where} cannot run the agent: pilot-core is not installed for it ({detail}). "
                    f"Install pilot-core there (python3 -m pip install pilot-core, or into a venv) and {howto}")
        if f"check-{scripts.OLD_PYTHON}" in marks:
            return f"{python} on {where} is {detail}: pilot-core needs Python 3.11+; {howto}"
        if f"check-{scripts.NO_STORE}" in marks:
            return (f"{python} on {where} has pilot-core but cannot use the coordination store {redact(store_url)}: "
                    f"{detail}. The host must reach the store (for Redis: the server, and pilot-redis installed there)")
        if detail:
            return f"{python} on {where} failed to start: {detail}"
        return f"starting the agent on {where} failed (exit status {status}): {err.strip()[-500:] or 'no output'}"

    def _parse(self, native_id: str) -> tuple[int, str]:
        match = _NATIVE.match(native_id)
        if match is None or match.group(2) != self.target.host:
            raise PilotError(f"{native_id!r} is not a pilot of {self.service_url}")
        return int(match.group(1)), match.group(3)

    def status(self, native_id: str) -> NativeStatus:
        """Running while the agent process lives; Failed (with the log's tail) once it is gone.
        Raises ``PilotError`` when the host cannot be asked (the heartbeat decides then)."""
        pid, pilot_id = self._parse(native_id)
        target = self._target_for(pilot_id)
        until, why = self._unreachable.get(target, (0.0, ""))
        if time.monotonic() < until:
            raise PilotError(why)
        try:
            _, out, _ = self.connections.run(target, "sh -s", scripts.status(pid, pilot_id, self._logs.get(pilot_id)),
                                             timeout=30)
        except PilotError as exc:
            self._unreachable[target] = (time.monotonic() + STATUS_BACKOFF, str(exc))
            raise
        self._unreachable.pop(target, None)
        lines = out.splitlines()
        if f"{scripts.MARK} running" in lines:
            return NativeStatus(State.Running)
        if f"{scripts.MARK} gone" in lines:
            tail = " | ".join(line.strip() for line in lines[lines.index(f"{scripts.MARK} gone") + 1:]
                              if line.strip())[-400:]
            return NativeStatus(State.Failed, f"agent process {pid} on {self.target.host} is gone"
                                + (f" (agent.log: {tail})" if tail else ""))
        return NativeStatus(State.Unknown, f"no answer from {self.target.where()}")

    def cancel(self, native_id: str) -> None:
        """End the agent (it drains) and everything left in its session."""
        pid, pilot_id = self._parse(native_id)
        status, out, err = self.connections.run(self._target_for(pilot_id), "sh -s",
                                                 scripts.cancel(pid, pilot_id, CANCEL_GRACE),
                                                 timeout=CANCEL_GRACE + 30)
        if f"{scripts.MARK} not-ours" in out:
            get_logger(pilot=pilot_id).info("pid reused by another process: nothing signalled", native_id=native_id)
        elif f"{scripts.MARK} ended" not in out:
            raise PilotError(f"cancel of {native_id} on {self.target.where()} failed (exit status {status}): "
                             f"{err.strip()[-300:]}")


def _sqlite_probe(store_url: str) -> tuple[str, str, str] | None:
    """``(store path, probe file, token)``: a file beside the SQLite store that the remote host
    must read back to prove it sees the same directory; None when it cannot be written here."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(store_url).path)
    token = secrets.token_hex(16)
    probe = str(Path(path).parent / f".pilot-ssh-probe-{token[:12]}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.fchmod(fd, 0o644)  # readable by the remote user, whatever this process's umask
            os.write(fd, token.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        get_logger().debug("cannot write the store probe; not checking the store", error=str(exc))
        return None
    return path, probe, token


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
