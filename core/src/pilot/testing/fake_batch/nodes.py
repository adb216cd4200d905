"""FAKE nodes of a fake batch job, and the FAKE ``pbsdsh``/``blaunch`` that start a task on one
of them, for tests only. Every node is this machine: ``FAKE_BATCH_NODES`` (comma-separated names)
adds nodes after this host's own name, and the job's slots are spread over them in order.

A task started on a node gets ``FAKE_BATCH_HOST=<node>`` in its environment, so a test can tell
where it "ran". Otherwise the tasks get what the real launchers give them:

- ``pbsdsh [-o] [-v] -h <node> [--] program [args]`` (Torque/PBS): the task starts in the home
  directory, with the environment the job started with (not the caller's) plus ``PBS_TASKNUM``,
  ``PBS_NODENUM`` and ``PBS_VNODENUM``; stdin is ``/dev/null``; its stdout goes to the job's
  output (to pbsdsh's stdout with ``-o``) and its stderr to the job's error file.
- ``blaunch [-z] <node> program [args]`` (LSF): the task inherits the caller's environment,
  working directory, stdin, stdout and stderr.

A node not in the job's allocation is refused, as the real commands do.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path


def hosts_per_slot(slots: int) -> list[str]:
    """One host name per slot: this host, then the ``FAKE_BATCH_NODES`` names, ``ceil(slots /
    nodes)`` slots each (a node left without slots is not part of the job)."""
    names = [socket.gethostname(), *(n.strip() for n in os.environ.get("FAKE_BATCH_NODES", "").split(",") if n.strip())]
    per_node = max(1, math.ceil(slots / len(names)))
    return [names[index // per_node] for index in range(slots)]


def _job_dir(job_id: str) -> Path:
    from pilot.testing.fake_batch.commands import _job_dir as job_dir

    return job_dir(job_id)


def _run_task(host: str, argv: list[str], *, env: dict[str, str], cwd: str, stdin: int | None,
              stdout: int | None, stderr: int | None) -> int:
    if not argv:
        print("usage: <launcher> <host> program [args]", file=sys.stderr)
        return 2
    try:
        proc = subprocess.Popen(argv, env={**env, "FAKE_BATCH_HOST": host}, cwd=cwd, stdin=stdin, stdout=stdout,
                                stderr=stderr)
    except OSError as exc:
        print(f"{os.path.basename(argv[0])}: {exc.strerror}", file=sys.stderr)
        return 127
    code = proc.wait()
    return code if code >= 0 else 128 - code


def pbsdsh(args: list[str]) -> int:
    """``pbsdsh -h <node> [-o] [-v] [--] program [args]`` inside a fake PBS job."""
    host, capture, index = None, False, 0
    while index < len(args) and args[index].startswith("-"):
        if args[index] == "--":
            index += 1
            break
        if args[index] == "-h" and index + 1 < len(args):
            host = args[index + 1]
            index += 1
        elif args[index] == "-o":
            capture = True
        elif args[index] not in ("-v", "-u", "-s"):
            print(f"pbsdsh: unsupported option {args[index]}", file=sys.stderr)
            return 1
        index += 1
    job_id = os.environ.get("PBS_JOBID", "")
    job_dir = _job_dir(job_id) if job_id else None
    if job_dir is None or not (job_dir / "environ.json").exists():
        print("pbsdsh: not running inside a PBS job (PBS_JOBID)", file=sys.stderr)
        return 1
    nodes = list(dict.fromkeys((job_dir / "nodefile").read_text().split()))
    if host is None or host not in nodes:
        print(f"pbsdsh: tm_spawn: node {host} is not allocated to job {job_id}", file=sys.stderr)
        return 1
    env = json.loads((job_dir / "environ.json").read_text())
    env.update({"PBS_TASKNUM": "1", "PBS_NODENUM": str(nodes.index(host)), "PBS_VNODENUM": "0"})
    with open(job_dir / "output", "ab") as out, open(job_dir / "error", "ab") as err:
        return _run_task(host, args[index:], env=env, cwd=env.get("HOME") or "/", stdin=subprocess.DEVNULL,
                         stdout=None if capture else out.fileno(), stderr=err.fileno())


def blaunch(args: list[str]) -> int:
    """``blaunch [-z] <node> program [args]`` inside a fake LSF job."""
    if args[:1] == ["-z"]:
        args = args[1:]
    if not args or not os.environ.get("LSB_JOBID"):
        print("blaunch: not running inside an LSF job (LSB_JOBID)" if args else "usage: blaunch <host> command",
              file=sys.stderr)
        return 1
    host, argv = args[0], args[1:]
    words = os.environ.get("LSB_MCPU_HOSTS", "").split()
    if host not in words[::2]:
        print(f"blaunch: {host}: host is not allocated to job {os.environ['LSB_JOBID']}", file=sys.stderr)
        return 1
    return _run_task(host, argv, env=dict(os.environ), cwd=os.getcwd(), stdin=None, stdout=None, stderr=None)
