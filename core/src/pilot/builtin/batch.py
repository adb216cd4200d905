"""Agent side of batch allocations: slot discovery for SLURM, PBS and LSF from the environment
the batch system gives the job, and the launch methods that reach the other nodes of an
allocation (``srun``, ``mpiexec``, ``pbsdsh``, ``blaunch``).

Pure environment and file parsing: nothing here talks to the batch system or imports PSI/J, so
the agent starts quickly inside the allocation. Units on the agent's own node still start with
``fork``; the agent's slot workers pick ``remote_launch_method`` for other nodes and
``mpi_launch_method`` for ``mpi`` units. A launch method with ``node_argv`` (``srun``,
``blaunch``, ``pbsdsh``) also starts the agent's node executors, which then start the single-slot
units of their nodes (``pilot.agent.remote``).
"""

from __future__ import annotations

import collections
import os
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pilot.commandline import command_argv, write_hostfile
from pilot.plugin import hookimpl
from pilot.plugin.types import AgentResources, LaunchMethodRecord, LaunchRequest, NodeSlots

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
_TASKS = re.compile(r"^(\d+)(?:\(x(\d+)\))?$")


def expand_hostlist(expression: str) -> list[str]:
    """Expand a SLURM host list (``n[1-3,7],gpu[01-02]``, ``rack[1-2]-n[1-2]``) into names."""
    hosts: list[str] = []
    for part in _split_top(expression.strip()):
        hosts.extend(_expand_one(part))
    return hosts


def _split_top(expression: str) -> list[str]:
    """Split at commas outside brackets."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(expression):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(expression[start:index])
            start = index + 1
    parts.append(expression[start:])
    return [p for p in (p.strip() for p in parts) if p]


def _expand_one(pattern: str) -> list[str]:
    open_at = pattern.find("[")
    if open_at < 0:
        return [pattern]
    close_at = pattern.index("]", open_at)
    prefix, body, rest = pattern[:open_at], pattern[open_at + 1:close_at], pattern[close_at + 1:]
    tails = _expand_one(rest)
    out: list[str] = []
    for item in body.split(","):
        match = _RANGE.match(item.strip())
        if match is None:
            raise ValueError(f"bad host list range {item!r} in {pattern!r}")
        first, last = match.group(1), match.group(2) or match.group(1)
        width = len(first)
        for number in range(int(first), int(last) + 1):
            out.extend(f"{prefix}{number:0{width}d}{tail}" for tail in tails)
    return out


def expand_counts(expression: str) -> list[int]:
    """Expand a SLURM count list (``2(x3),1``) into one count per node."""
    counts: list[int] = []
    for item in expression.split(","):
        match = _TASKS.match(item.strip())
        if match is None:
            raise ValueError(f"bad SLURM count list {expression!r}")
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts


def _count_hosts(names: Iterable[str]) -> tuple[NodeSlots, ...]:
    """One NodeSlots per distinct name, in first-seen order, counting repeats as slots."""
    counter = collections.Counter(names)
    return tuple(NodeSlots(host, slots) for host, slots in counter.items())


def _local_name(hosts: Iterable[str]) -> str:
    """The entry of ``hosts`` naming this machine (matching by short name), else its hostname."""
    me = socket.gethostname()
    short = me.split(".")[0]
    for host in hosts:
        if host == me or host.split(".")[0] == short:
            return host
    return me


def slurm_resources(environ: Mapping[str, str]) -> AgentResources | None:
    """Slots from ``SLURM_JOB_NODELIST`` and ``SLURM_TASKS_PER_NODE``; None outside SLURM."""
    if not environ.get("SLURM_JOB_ID"):
        return None
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    if not nodelist:
        return None
    hosts = expand_hostlist(nodelist)
    raw = environ.get("SLURM_TASKS_PER_NODE") or environ.get("SLURM_JOB_CPUS_PER_NODE") or ""
    counts = expand_counts(raw) if raw else [1] * len(hosts)
    if len(counts) != len(hosts):
        counts = (counts + [counts[-1] if counts else 1] * len(hosts))[:len(hosts)]
    nodes = tuple(NodeSlots(host, count) for host, count in zip(hosts, counts, strict=True) if count > 0)
    local = environ.get("SLURMD_NODENAME") or _local_name(hosts)
    return AgentResources(nodes=nodes, remote_launch_method="srun", mpi_launch_method="srun",
                          source="slurm", local_host=local)


def _read_lines(path: str) -> list[str]:
    try:
        return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError:
        return []


def pbs_resources(environ: Mapping[str, str]) -> AgentResources | None:
    """Slots from ``PBS_NODEFILE`` (one line per slot); None outside PBS/Torque."""
    if not environ.get("PBS_JOBID") or not environ.get("PBS_NODEFILE"):
        return None
    names = _read_lines(environ["PBS_NODEFILE"])
    if not names:
        return None
    nodes = _count_hosts(names)
    return AgentResources(nodes=nodes, remote_launch_method="pbsdsh", mpi_launch_method="mpiexec",
                          source="pbs", local_host=_local_name(n.host for n in nodes))


def lsf_resources(environ: Mapping[str, str]) -> AgentResources | None:
    """Slots from ``LSB_MCPU_HOSTS`` (``host n host n``), else ``LSB_DJOB_HOSTFILE`` or
    ``LSB_HOSTS``; None outside LSF."""
    if not environ.get("LSB_JOBID"):
        return None
    words = environ.get("LSB_MCPU_HOSTS", "").split()
    if words and len(words) % 2 == 0 and all(w.isdigit() for w in words[1::2]):
        nodes = tuple(NodeSlots(h, int(n)) for h, n in zip(words[::2], words[1::2], strict=True) if int(n) > 0)
    else:
        names = _read_lines(environ["LSB_DJOB_HOSTFILE"]) if environ.get("LSB_DJOB_HOSTFILE") else []
        nodes = _count_hosts(names or environ.get("LSB_HOSTS", "").split())
    if not nodes:
        return None
    return AgentResources(nodes=nodes, remote_launch_method="blaunch", mpi_launch_method="mpiexec",
                          source="lsf", local_host=_local_name(n.host for n in nodes))


@hookimpl
def pilot_agent_resources(environ: Mapping[str, str], requested_slots: int) -> AgentResources | None:
    """The allocation's slots under SLURM, PBS or LSF; None when the agent runs in none of them."""
    return slurm_resources(environ) or pbs_resources(environ) or lsf_resources(environ)


def _unique(hosts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(hosts))


def _in_sandbox(request: LaunchRequest) -> list[str]:
    """``/bin/sh`` that enters the sandbox and runs the command line there (for launchers that
    start the remote process in the home directory); values travel as arguments, never spliced."""
    return ["/bin/sh", "-c", 'cd "$1" && exec /bin/sh -c "$2"', "sh", str(request.sandbox), request.command_line]


class SrunLaunch:
    """``srun`` job steps inside a SLURM allocation: one task on the unit's node, or an MPI unit
    with one rank per slot it was given (``-m arbitrary`` places rank *i* on ``hosts[i]``)."""

    def argv(self, request: LaunchRequest) -> list[str]:
        """The srun argv; ``--overlap`` lets steps share the allocation's CPUs."""
        if not request.mpi:
            return ["srun", "--nodes=1", "--ntasks=1", f"--nodelist={request.hosts[0]}", "--overlap",
                    "--quiet", *command_argv(request.command_line)]
        hosts = list(request.hosts)
        return ["env", "-u", "SLURM_NTASKS_PER_NODE", "srun", f"--ntasks={len(hosts)}",
                f"--nodes={len(_unique(hosts))}", "--distribution=arbitrary", f"--nodelist={','.join(hosts)}",
                "--overlap", "--quiet", *command_argv(request.command_line)]

    def node_argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """One task running ``argv`` on ``host`` (the agent's node executors), stdin passed on.
        It gets every CPU the job holds on ``host`` (``--cpus-per-task``, which implies
        ``--exact`` since SLURM 21.08), so the units it starts are not confined to one CPU where
        the cluster binds or confines tasks; ``--overlap`` lets the per-unit steps share them."""
        cpus = job_cpus(os.environ, host)
        return ["srun", "--nodes=1", "--ntasks=1", f"--nodelist={host}", *([f"--cpus-per-task={cpus}"] if cpus else []),
                "--overlap", "--quiet", *argv]


def job_cpus(environ: Mapping[str, str], host: str) -> int | None:
    """The CPUs the SLURM job holds on ``host`` (``SLURM_JOB_CPUS_PER_NODE`` along
    ``SLURM_JOB_NODELIST``); None when the environment does not say."""
    try:
        hosts = expand_hostlist(environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST") or "")
        counts = expand_counts(environ.get("SLURM_JOB_CPUS_PER_NODE") or "")
    except ValueError:
        return None
    return counts[hosts.index(host)] if host in hosts and len(counts) == len(hosts) else None


class MpiexecLaunch:
    """``mpiexec -n N -hostfile <sandbox>/.pilot-hostfile-<random>`` (MPICH and Open MPI both
    read it)."""

    def argv(self, request: LaunchRequest) -> list[str]:
        """Write the unit's own host file (one line per slot, never a user's ``hostfile``), then
        wrap the command line in mpiexec."""
        return ["mpiexec", "-n", str(request.processes), "-hostfile", write_hostfile(request),
                *command_argv(request.command_line)]


class PbsdshLaunch:
    """``pbsdsh -h <host>``: one task on another node of a PBS/Torque allocation. pbsdsh starts
    it in the home directory with the job's environment as the job started (not the agent's),
    with no stdin, and sends its stdout to the job's output unless ``-o``. So the unit's sandbox
    is entered first, ``-o`` brings its stdout back, its stderr goes to the job's error file,
    and a unit's own ``environment`` does not travel this way: the node executors (which this
    method starts; they connect back to the agent, ``node_stdio = False``) carry both."""

    node_stdio = False

    def argv(self, request: LaunchRequest) -> list[str]:
        """The pbsdsh argv."""
        return ["pbsdsh", "-o", "-h", request.hosts[0], "--", *_in_sandbox(request)]

    def node_argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """One task running ``argv`` on ``host`` (a node executor that connects back)."""
        return ["pbsdsh", "-h", host, "--", *argv]


class BlaunchLaunch:
    """``blaunch <host>``: one task on another node of an LSF allocation (stdin, stdout and
    stderr passed through)."""

    def argv(self, request: LaunchRequest) -> list[str]:
        """The blaunch argv."""
        return ["blaunch", request.hosts[0], *_in_sandbox(request)]

    def node_argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """One task running ``argv`` on ``host`` (the agent's node executors), stdin passed on."""
        return ["blaunch", host, *argv]


@hookimpl
def pilot_launch_methods() -> list[LaunchMethodRecord]:
    """Register ``srun``, ``mpiexec``, ``pbsdsh`` and ``blaunch``."""
    return [LaunchMethodRecord(name="srun", method=SrunLaunch()),
            LaunchMethodRecord(name="mpiexec", method=MpiexecLaunch()),
            LaunchMethodRecord(name="pbsdsh", method=PbsdshLaunch()),
            LaunchMethodRecord(name="blaunch", method=BlaunchLaunch())]
