"""The Grid Engine adaptor (``sge://localhost``): one pilot is one Grid Engine job running the agent.

**submit** writes ``<sandbox>/pilot-job.sh`` (0700: it holds environment values), which sets this
process's umask, enters the sandbox, exports the description's environment, this process's
``PILOT_*`` and ``PATH``, runs the site's pre-commands and then the agent. ``qsub -b y`` runs
it from there, so its values never reach Grid Engine's spool or ``qstat -j``. The native id is the
job number. **status** reads ``qstat``, then ``qacct`` once the job has left it. **cancel** is
``qdel``. The description's mapping and the ``extra`` keys are in the README.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import socket
import subprocess
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pilot.errors import PilotError
from pilot.plugin.types import NativeStatus, PilotJobRequest
from pilot.states import State

EXTRA_KEYS = ("pe", "qsub_args", "drain_margin")
DEFAULT_PE = "smp"
SCRIPT = "pilot-job.sh"
_LOCAL_NAMES = {"", "localhost", "127.0.0.1", "::1"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RUNNING = set("rt")  # qstat state letters of a started job: running, transferring ("Rq": requeued, pending)
# The agent leads its own session. qdel's notice (SIGUSR2, with qsub -notify) makes it drain, even
# when it was stopped; when it ends, even killed, nothing it started outlives the job (a root
# job's units escape Grid Engine's own kill, which spares root processes).
_RUN_AGENT = """trap 'kill -TERM "$agent"; kill -CONT "$agent"' USR2 TERM
{argv} &
agent=$!
while :; do wait "$agent"; rc=$?; kill -0 "$agent" 2>/dev/null || break; done
pkill -KILL -s "$agent" 2>/dev/null
exit "$rc"
"""


def run(argv: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run one Grid Engine command; ``PilotError`` when it cannot be started."""
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise PilotError(f"{argv[0]} not found: Grid Engine's client commands must be on PATH") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PilotError(f"{argv[0]} failed: {exc}") from None


def one_line(text: str) -> str:
    """Command output as one line."""
    return "; ".join(filter(None, (line.strip() for line in text.splitlines())))


def drain_margin(walltime: float, extra: Mapping[str, Any]) -> float:
    """Seconds before the walltime at which the agent drains."""
    value = extra.get("drain_margin", min(120.0, max(1.0, walltime * 3.0)))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise PilotError(f"extra key 'drain_margin' must be a non-negative number of seconds, got {value!r}",
                         key="drain_margin")
    return float(value)


def current_umask() -> str | None:
    """This process's umask (Grid Engine starts jobs with 022), from Linux's /proc."""
    status = Path("/proc/self/status")
    lines = status.read_text().splitlines() if status.exists() else []
    return next((line.split()[1] for line in lines if line.startswith("Umask:")), None)


def job_script(request: PilotJobRequest, argv: Sequence[str], environ: Mapping[str, str]) -> str:
    """The job script: this process's umask, every value shell-quoted, the agent run by
    ``_RUN_AGENT``."""
    env = {k: v for k, v in environ.items() if k.startswith("PILOT_") or k == "PATH"}
    env.update(request.environment)
    bad = [name for name in env if not _NAME.match(name)]
    if bad:
        raise PilotError(f"environment variable name {bad[0]!r} cannot be exported by a shell", key="environment")
    mask = current_umask()
    lines = ["#!/bin/sh", "# written by pilot-sge: the pilot's Grid Engine job", *([f"umask {mask}"] if mask else []),
             f"cd -- {shlex.quote(str(request.sandbox))} || exit 1",
             *(f"export {name}={shlex.quote(value)}" for name, value in env.items()),
             *request.pre_commands, _RUN_AGENT.format(argv=shlex.join(argv))]
    return "\n".join(lines)


def qsub_argv(request: PilotJobRequest, script: str) -> tuple[list[str], list[str]]:
    """The ``qsub`` command line for ``request``, and the agent's argv."""
    desc = request.description
    extra = dict(desc.extra)
    unknown = sorted(set(extra) - set(EXTRA_KEYS))
    if unknown:
        raise PilotError(f"unknown extra key {unknown[0]!r} for a Grid Engine pilot (known: "
                         f"{', '.join(EXTRA_KEYS)})", key=unknown[0])
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.pilot_id)
    log = str(request.sandbox / "agent.log")  # the agent's output and errors, as with the fork adaptor
    argv = ["qsub", "-terse", "-notify", "-b", "y", "-shell", "no", "-N", name, "-wd", str(request.sandbox), "-o", log,
            "-j", "y"]
    agent = list(request.agent_argv)
    if desc.walltime:
        argv += ["-l", f"h_rt={math.ceil(desc.walltime) * 60}"]
        agent += ["--drain-margin", f"{drain_margin(desc.walltime, extra):g}"]
    for flag, value in (("-q", desc.queue), ("-P", desc.project), ("-ar", desc.reservation)):
        if value:
            argv += [flag, value]
    if desc.number_of_processes > 1:
        pe = extra.get("pe") or os.environ.get("PILOT_SGE_PE") or DEFAULT_PE
        argv += ["-pe", str(pe), str(desc.number_of_processes)]
    more = extra.get("qsub_args", [])
    if not isinstance(more, (list, tuple)) or not all(isinstance(a, str) for a in more):
        raise PilotError(f"extra key 'qsub_args' must be a list of strings, got {more!r}", key="qsub_args")
    return [*argv, *more, script], agent


class SgeAdaptor:
    """Submits, watches and cancels pilot jobs with this host's ``qsub``, ``qstat``, ``qacct``, ``qdel``."""

    def __init__(self, service_url: str) -> None:
        host = urllib.parse.urlsplit(service_url).hostname or ""
        if host not in _LOCAL_NAMES and host not in (socket.gethostname(), socket.getfqdn()):
            raise PilotError(f"sge:// pilots are submitted with this host's qsub; use sge://localhost on a "
                             f"submit host of the cluster, not {host!r}", key="service_url")

    def submit(self, request: PilotJobRequest) -> str:
        """Write the job script and ``qsub`` it; return the job number. ``PilotError`` carries
        qsub's own message when Grid Engine rejects the job."""
        script = request.sandbox / SCRIPT
        argv, agent = qsub_argv(request, str(script))
        request.sandbox.mkdir(parents=True, exist_ok=True)
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "w") as file:
            os.fchmod(fd, 0o700)
            file.write(job_script(request, agent, os.environ))
        result = run(argv)
        job = (result.stdout.split() or [""])[-1].split(".")[0]  # "17", or "17.1-4:1" for an array
        if result.returncode != 0 or not job.isdigit():
            raise PilotError(f"qsub rejected the pilot job: {one_line(result.stderr + result.stdout) or 'no message'}")
        return job

    def status(self, native_id: str) -> NativeStatus:
        """``Pending``/``Running`` from qstat's state letters; ``Failed`` for a job in error
        (with Grid Engine's reason); ``Done``/``Failed`` from qacct once the job has left."""
        listing = run(["qstat", "-u", "*"])
        if listing.returncode != 0:
            raise PilotError(f"qstat failed: {one_line(listing.stderr) or listing.returncode}")
        for line in listing.stdout.splitlines():
            fields = line.split()
            if len(fields) > 4 and fields[0] == native_id:
                letters = fields[4]
                if "E" in letters:
                    why = [ln for ln in run(["qstat", "-j", native_id]).stdout.splitlines() if "error" in ln]
                    return NativeStatus(State.Failed, f"Grid Engine job {native_id} is in error state "
                                                      f"({letters}): {one_line(' '.join(why)) or 'no reason given'}")
                if "d" in letters:
                    return NativeStatus(State.Canceled, f"Grid Engine job {native_id} is being deleted")
                return NativeStatus(State.Running if _RUNNING & set(letters) else State.Pending, letters)
        return self._accounted(native_id)

    def _accounted(self, native_id: str) -> NativeStatus:
        """The end of a job that has left qstat, from ``qacct`` (its last record)."""
        result = run(["qacct", "-j", native_id])
        values: dict[str, str] = {}
        for line in result.stdout.splitlines():
            key, _, value = line.partition(" ")
            values[key] = " ".join(value.split())  # "137 (Killed)", "100 : assumedly after job"
        if result.returncode != 0 or "failed" not in values:
            return NativeStatus(State.Unknown, f"Grid Engine job {native_id} left the queue; no accounting "
                                               f"record (yet): {one_line(result.stderr) or 'qacct found none'}")
        failed, code = values["failed"], values.get("exit_status", "?")
        if failed == "0" and code.split(" ")[0] == "0":
            return NativeStatus(State.Done)
        return NativeStatus(State.Failed, f"Grid Engine job {native_id} ended with exit status {code}"
                                          + ("" if failed == "0" else f", failed {failed}"))

    def cancel(self, native_id: str) -> None:
        """``qdel`` the job; a job Grid Engine no longer knows is not an error."""
        result = run(["qdel", native_id])
        message = one_line(result.stderr + result.stdout)
        if result.returncode != 0 and "does not exist" not in message:
            raise PilotError(f"qdel {native_id} failed: {message or result.returncode}")
