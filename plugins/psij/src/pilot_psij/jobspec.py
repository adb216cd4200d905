"""The pilot description as a PSI/J job: pure mapping, no batch system is contacted here.

``number_of_processes`` and ``processes_per_node`` become PSI/J's ``ResourceSpecV1``;
``walltime``, ``queue``, ``project`` and ``reservation`` become ``JobAttributes``; the agent is
the job's executable, run in the pilot sandbox after the site's pre-commands. ``extra`` keys
with a dot (``slurm.qos``, ``pbs.l``, ``lsf.core_isolation``) are PSI/J custom attributes, which
PSI/J writes as directives into the job script; the plain keys below tune the job itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from psij import Job, JobAttributes, JobSpec, ResourceSpecV1

from pilot.errors import PilotError
from pilot.plugin.types import PilotJobRequest

#: Plain ``extra`` keys this adaptor understands (dotted keys go to PSI/J unchanged).
EXTRA_KEYS = {
    "drain_margin": "seconds before the walltime at which the agent drains (default: 5% of it, 1-120 s)",
    "node_count": "nodes to ask for (default: from number_of_processes / processes_per_node)",
    "cpu_cores_per_process": "cores per slot",
    "gpu_cores_per_process": "GPUs per slot",
    "exclusive_node_use": "true: nodes are not shared with other jobs",
    "memory": "bytes of memory per node",
}
AGENT_OUT = "agent.out"
AGENT_LOG = "agent.log"
PRE_LAUNCH = "pre_launch.sh"
#: Characters that must never reach a job script line: a newline ends a ``#SBATCH``/``#PBS``/
#: ``#BSUB`` directive and the rest would run as shell in the job (quoting cannot help there).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def drain_margin(walltime_minutes: float | None, extra: Mapping[str, Any]) -> float | None:
    """Seconds before the walltime at which the agent drains: ``extra["drain_margin"]``, else 5%
    of the walltime, at least 1 s and at most 120 s. None without a walltime."""
    if walltime_minutes is None:
        return None
    if "drain_margin" in extra:
        value = extra["drain_margin"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise PilotError(f"extra key 'drain_margin' must be a non-negative number of seconds, got {value!r}",
                             key="drain_margin")
        return float(value)
    return min(120.0, max(1.0, walltime_minutes * 60 * 0.05))


def _int_extra(extra: Mapping[str, Any], key: str) -> int | None:
    value = extra.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PilotError(f"extra key {key!r} must be a positive integer, got {value!r}", key=key)
    return value


def split_extra(extra: Mapping[str, Any]) -> dict[str, Any]:
    """The PSI/J custom attributes among ``extra``; raise ``PilotError`` on an unknown plain key."""
    custom = {}
    for key, value in extra.items():
        if "." in key:
            custom[key] = value
        elif key not in EXTRA_KEYS:
            known = ", ".join(sorted(EXTRA_KEYS))
            raise PilotError(f"unknown extra key {key!r} for a PSI/J pilot (known: {known}; "
                             "'<executor>.<option>' keys become batch directives)", key=key)
    return custom


def _check_line(key: str, value: object, show: bool = True) -> None:
    """Refuse ``value`` (as PSI/J renders it) when it could break a job script line."""
    text = value if isinstance(value, str) else str(value)
    found = _UNSAFE.search(text)
    if found is None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise PilotError(f"{key} must be valid UTF-8 text (it goes into the batch job script)",
                             key=key) from None
        return
    where = f" at {found.start()}" if show else ""
    raise PilotError(f"{key} must not hold control characters such as newlines (found {found.group()!r}{where}): "
                     "it goes into a line of the batch job script", key=key)


def check_script_values(request: PilotJobRequest, custom: Mapping[str, Any]) -> None:
    """Defence in depth: every value that reaches a line of the job script (directives, the
    environment, the agent's command line) is free of control characters, whatever path it took
    (a description, a site file, a caller building the request itself). Environment values are
    never shown, only their names."""
    desc = request.description
    for key in ("queue", "project", "reservation"):
        value = getattr(desc, key, None)
        if value:
            _check_line(key, value)
    for key, value in custom.items():
        _check_line(f"extra key {key!r}", key)
        _check_line(f"extra[{key!r}]", value)
    _check_line("working_directory", request.sandbox)
    for name, value in request.environment.items():
        _check_line("environment variable name", name)
        _check_line(f"environment[{name!r}]", value, show=False)
    for number, arg in enumerate(request.agent_argv):
        _check_line("python" if number == 0 else "agent command line", arg)
    _check_line("pilot id", request.pilot_id)


def pre_launch_script(pre_commands: tuple[str, ...]) -> str:
    """The script PSI/J sources before it starts the agent (so ``module load`` and ``export``
    reach the agent)."""
    return "# generated by pilot-psij: the site's commands to run before the agent starts\n" + \
        "".join(f"{command}\n" for command in pre_commands)


#: The custom attribute that names the batch job (PSI/J's templates do not render a job name).
_NAME_ATTRIBUTE = {"slurm": "slurm.job-name", "pbs": "pbs.N", "lsf": "lsf.J"}
#: Executors whose job script needs a duration: without a walltime, PSI/J's default applies.
_NEEDS_DURATION = frozenset({"lsf"})


def build_job(request: PilotJobRequest, executor: str = "slurm") -> Job:
    """The PSI/J job that runs the pilot's agent on ``executor`` (a PSI/J executor name)."""
    desc = request.description
    extra = dict(desc.extra)
    custom = split_extra(extra)
    check_script_values(request, custom)
    name_key = _NAME_ATTRIBUTE.get(executor)
    if name_key and name_key not in custom:
        custom[name_key] = request.pilot_id
    margin = drain_margin(desc.walltime, extra)
    argv = list(request.agent_argv)
    if margin is not None:
        argv += ["--drain-margin", f"{margin:g}"]
    exclusive = extra.get("exclusive_node_use", False)
    if not isinstance(exclusive, bool):
        raise PilotError(f"extra key 'exclusive_node_use' must be true or false, got {exclusive!r}",
                         key="exclusive_node_use")
    try:
        resources = ResourceSpecV1(
            node_count=_int_extra(extra, "node_count"), process_count=desc.number_of_processes,
            processes_per_node=desc.processes_per_node,
            cpu_cores_per_process=_int_extra(extra, "cpu_cores_per_process"),
            gpu_cores_per_process=_int_extra(extra, "gpu_cores_per_process"),
            exclusive_node_use=exclusive, memory=_int_extra(extra, "memory"))
    except Exception as exc:  # PSI/J's InvalidJobException and typeguard's TypeError
        raise PilotError(f"pilot resources not possible: {exc}", key="processes_per_node") from None
    attributes = JobAttributes(queue_name=desc.queue, account=desc.project, reservation_id=desc.reservation,
                               custom_attributes=custom or None)
    if desc.walltime:
        attributes.duration = timedelta(minutes=desc.walltime)
    elif executor not in _NEEDS_DURATION:
        # the batch system's default limit applies, not PSI/J's ten minutes
        attributes.duration = None  # type: ignore[assignment]
    spec = JobSpec(executable=argv[0], arguments=argv[1:], directory=request.sandbox, name=request.pilot_id,
                   environment=dict(request.environment) or None, inherit_environment=True,
                   stdout_path=request.sandbox / AGENT_OUT, stderr_path=request.sandbox / AGENT_LOG,
                   resources=resources, attributes=attributes,
                   pre_launch=request.sandbox / PRE_LAUNCH if request.pre_commands else None)
    return Job(spec)
