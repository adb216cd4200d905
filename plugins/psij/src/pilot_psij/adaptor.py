"""Resource adaptors over PSI/J's batch executors: one pilot is one batch job running the agent.

PSI/J does the batch work (job script, ``sbatch``/``qsub``/``bsub``, queue polling, cancel);
this module maps pilot descriptions onto PSI/J jobs (``pilot_psij.jobspec``), PSI/J states onto
pilot states, and adds tenacity retries around every batch command PSI/J runs.

Settings, read when the adaptor is first used (never at import):

- PSI/J's queue polling interval: ``?poll_interval=<seconds>`` on the ``service_url``, else
  ``$PILOT_PSIJ_POLL_INTERVAL``, else 10 s.
- PSI/J's work directory (job scripts, exit-code files; must be on a filesystem the compute
  nodes share): ``$PILOT_PSIJ_WORK_DIR``, else ``$PILOT_HOME/psij``. The job scripts hold the
  pilot's environment values, so PSI/J's directory for them (``<work dir>/<executor>``) is made
  0700 (its files are then unreadable by others whatever the umask).
- Attempts per batch command: ``$PILOT_PSIJ_RETRY_ATTEMPTS`` (default 4).
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import socket
import subprocess
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import tenacity
from psij import Job, JobExecutor, JobExecutorConfig, JobState, JobStatus

from pilot.errors import PilotError
from pilot.plugin.types import NativeStatus, PilotJobRequest
from pilot.session import pilot_home, positive_seconds
from pilot.states import State
from pilot_psij.jobspec import PRE_LAUNCH, build_job, pre_launch_script

POLL_ENV = "PILOT_PSIJ_POLL_INTERVAL"
WORK_DIR_ENV = "PILOT_PSIJ_WORK_DIR"
ATTEMPTS_ENV = "PILOT_PSIJ_RETRY_ATTEMPTS"
DEFAULT_POLL_INTERVAL = 10.0
DEFAULT_ATTEMPTS = 4
BATCH_EXECUTORS = frozenset({"slurm", "pbs", "lsf", "cobalt"})
#: Executors whose job scripts give the limit in whole minutes (LSF's ``-W`` drops the seconds, so
#: a walltime of 0.5 minutes would be ``-W 0:0``); their pilot jobs ask for the minute above.
WHOLE_MINUTES = frozenset({"lsf", "cobalt"})
#: Executors whose job scripts lose the environment (PSI/J's Cobalt template writes ``#COBALT --env``
#: after a blank line, where qsub stops reading directives): it goes into the pre-launch script.
ENV_IN_PRE_LAUNCH = frozenset({"cobalt"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOCAL_NAMES = {"", "localhost", "127.0.0.1", "::1"}
#: Batch command errors that no retry can fix (bad partition, no permission, finished job ...).
_PERMANENT = re.compile(
    r"invalid|not (?:allowed|permitted|authori[sz]ed|found)|denied|unrecognized|unknown|exceed|already|"
    r"has finished|no matching|no such|illegal|usage:|requested node configuration is not available",
    re.IGNORECASE)
#: Messages PSI/J's poll thread gives jobs when the status command itself failed.
_POLL_FAILURE = ("Failed to poll for job status", "Error updating job statuses", "Failed to update job status")
_STATES = {JobState.QUEUED: State.Pending, JobState.ACTIVE: State.Running, JobState.COMPLETED: State.Done,
           JobState.FAILED: State.Failed, JobState.CANCELED: State.Canceled}

log = logging.getLogger(__name__)


def poll_interval(service_url: str, environ: Mapping[str, str] | None = None) -> float:
    """PSI/J's queue polling interval for ``service_url``."""
    env = os.environ if environ is None else environ
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(service_url).query)
    if "poll_interval" in query:
        return positive_seconds(query["poll_interval"][-1], "service_url poll_interval")
    if env.get(POLL_ENV):
        return positive_seconds(env[POLL_ENV], POLL_ENV)
    return DEFAULT_POLL_INTERVAL


def private_directory(path: Path) -> None:
    """Create ``path`` (and its parents) and make it 0700 when this user owns it: PSI/J writes the
    job scripts there, which hold the pilot's environment values."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = path.stat()
        if info.st_uid == os.getuid() and info.st_mode & 0o077:
            path.chmod(0o700)
    except OSError as exc:
        raise PilotError(f"PSI/J work directory {path}: {exc.strerror or exc}", key=WORK_DIR_ENV) from None


def is_transient(exc: BaseException) -> bool:
    """True for a batch command failure that a retry may fix (timeouts, a busy controller)."""
    if isinstance(exc, subprocess.CalledProcessError):
        return not _PERMANENT.search(str(exc.output or ""))
    return isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, PermissionError))


def retrying(run: Callable[[list[str]], str], attempts: int, wait_max: float = 4.0) -> Callable[[list[str]], str]:
    """``run`` (PSI/J's command runner) retried on transient failures, up to ``attempts`` times."""
    def note(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        detail = str(getattr(exc, "output", "") or exc).strip().splitlines()
        log.warning("batch command failed (attempt %d of %d), retrying: %s", state.attempt_number, attempts,
                    detail[-1] if detail else exc)

    return tenacity.retry(retry=tenacity.retry_if_exception(is_transient), stop=tenacity.stop_after_attempt(attempts),
                          wait=tenacity.wait_exponential(multiplier=0.25, max=wait_max), before_sleep=note,
                          reraise=True)(run)


def native_status(status: JobStatus, native_id: str) -> NativeStatus:
    """A PSI/J job status as a pilot state, with the batch system's message for failures."""
    state = _STATES.get(status.state, State.Unknown)
    if state is State.Failed:
        message = (status.message or "").strip()
        if not message and status.exit_code is not None:
            message = f"the pilot job exited with code {status.exit_code}"
        return NativeStatus(State.Failed, f"batch job {native_id} failed: {message or 'no reason given'}")
    if state is State.Unknown:
        return NativeStatus(State.Unknown, f"batch job {native_id}: waiting for the first queue poll")
    return NativeStatus(state, (status.message or "").strip())


def exports(environment: Mapping[str, str]) -> list[str]:
    """``export NAME='value'`` lines for ``environment``; ``PilotError`` for a name no shell exports."""
    for name in environment:
        if not _NAME.match(name):
            raise PilotError(f"environment variable name {name!r} cannot be exported by a shell", key="environment")
    return [f"export {name}={shlex.quote(str(value))}" for name, value in environment.items()]


def write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by this user only (it may hold the pilot's environment values)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)


def whole_minutes(duration: timedelta) -> timedelta:
    """``duration`` rounded up to whole minutes, at least one (the agent still drains at the
    pilot's own walltime, before this limit)."""
    return timedelta(minutes=max(1, math.ceil(duration.total_seconds() / 60)))


def cobalt_time_fix(executor: Any) -> None:
    """PSI/J's Cobalt template writes ``#COBALT --time={{duration}}``, a name its context lacks
    (so ``--time=``, which ``qsub`` refuses): give the script context that name, the limit as
    PSI/J formats it (``HH:MM:SS``)."""
    generate = executor.generate_submit_script

    def generate_submit_script(job: Job, context: dict[str, object], submit_file: IO[str]) -> None:
        if "formatted_job_duration" in context:
            context.setdefault("duration", context["formatted_job_duration"])
        generate(job, context, submit_file)

    executor.generate_submit_script = generate_submit_script


class PsijAdaptor:
    """Submits, watches and cancels pilot jobs through one PSI/J executor (created on first use)."""

    def __init__(self, service_url: str, executor: str) -> None:
        parts = urllib.parse.urlsplit(service_url)
        host = parts.hostname or ""
        if host not in _LOCAL_NAMES and host not in (socket.gethostname(), socket.getfqdn()):
            raise PilotError(f"{parts.scheme}:// pilots are submitted with this host's batch commands; "
                             f"use {parts.scheme}://localhost on a login node of the cluster, not {host!r}",
                             key="service_url")
        self.service_url, self.name = service_url, executor
        self.poll_interval = poll_interval(service_url)
        self._executor: JobExecutor | None = None
        self._jobs: dict[str, Job] = {}
        self._lock = threading.RLock()

    def executor(self) -> JobExecutor:
        """The PSI/J executor, created with its polling interval and work directory."""
        with self._lock:
            if self._executor is None:
                work = Path(os.environ.get(WORK_DIR_ENV) or pilot_home() / "psij")
                private_directory(work / self.name)
                config: JobExecutorConfig
                if self.name in BATCH_EXECUTORS:
                    from psij.executors.batch.batch_scheduler_executor import BatchSchedulerExecutorConfig

                    config = BatchSchedulerExecutorConfig(
                        work_directory=work, queue_polling_interval=self.poll_interval,  # type: ignore[arg-type]
                        initial_queue_polling_delay=min(self.poll_interval, 1.0),  # type: ignore[arg-type]
                        queue_polling_error_threshold=10)
                else:
                    config = JobExecutorConfig(work_directory=work)
                try:
                    executor = JobExecutor.get_instance(self.name, config=config)
                except Exception as exc:
                    raise PilotError(f"PSI/J executor {self.name!r} is not usable here: {exc}") from None
                attempts = int(os.environ.get(ATTEMPTS_ENV) or DEFAULT_ATTEMPTS)
                if hasattr(executor, "_run_command"):  # every batch command goes through this runner
                    executor._run_command = retrying(executor._run_command, max(1, attempts))
                if self.name == "cobalt":
                    cobalt_time_fix(executor)
                self._executor = executor
            return self._executor

    def submit(self, request: PilotJobRequest) -> str:
        """Submit the pilot job; return the batch system's job id. ``PilotError`` carries the
        batch system's own message when it rejects the job."""
        job = build_job(request, self.name)
        attributes = job.spec.attributes if job.spec is not None else None
        if self.name in WHOLE_MINUTES and attributes is not None and attributes.duration is not None:
            attributes.duration = whole_minutes(attributes.duration)
        pre_commands = request.pre_commands
        if self.name in ENV_IN_PRE_LAUNCH and job.spec is not None and job.spec.environment:
            pre_commands = (*exports(job.spec.environment), *pre_commands)
            job.spec.environment = None
            job.spec.pre_launch = request.sandbox / PRE_LAUNCH
        request.sandbox.mkdir(parents=True, exist_ok=True)
        if pre_commands:
            write_private(request.sandbox / PRE_LAUNCH, pre_launch_script(pre_commands))
        executor = self.executor()
        try:
            executor.submit(job)
        except PilotError:
            raise
        except Exception as exc:
            message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            raise PilotError(f"{self.name} rejected the pilot job: {message or type(exc).__name__}") from None
        native_id = job.native_id
        if not native_id:
            raise PilotError(f"{self.name} accepted the pilot job but gave no job id")
        with self._lock:
            self._jobs[native_id] = job
        return native_id

    def _job(self, native_id: str) -> Job:
        """The PSI/J job for ``native_id``: the one submitted here, else one attached to it."""
        with self._lock:
            job = self._jobs.get(native_id)
            if job is None:
                job = Job()
                self.executor().attach(job, native_id)
                self._jobs[native_id] = job
            return job

    def status(self, native_id: str) -> NativeStatus:
        """The job's state as PSI/J's queue poller last saw it (``Unknown`` until its first poll
        after a reconnect, or while the status command keeps failing)."""
        status = self._job(native_id).status
        if status.state == JobState.FAILED and (status.message or "").startswith(_POLL_FAILURE):
            with self._lock:  # the poll failed, not the job: watch it afresh
                self._jobs.pop(native_id, None)
            return NativeStatus(State.Unknown, f"batch job {native_id}: status unavailable")
        return native_status(status, native_id)

    def cancel(self, native_id: str) -> None:
        """Cancel the job (``scancel``/``qdel``/``bkill``); a job already gone is not an error."""
        job = self._job(native_id)
        try:
            self.executor().cancel(job)
        except Exception as exc:
            raise PilotError(f"cancelling batch job {native_id} failed: {str(exc).strip()}") from None


def factory(executor: str) -> Callable[[str], Any]:
    """A ``ResourceAdaptorRecord`` factory for one PSI/J executor."""
    def make(service_url: str) -> PsijAdaptor:
        return PsijAdaptor(service_url, executor)

    make.__name__ = f"{executor}_adaptor"
    return make
