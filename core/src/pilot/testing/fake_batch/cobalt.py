"""The FAKE Cobalt commands (``qsub``/``qstat``/``qdel`` of ``install(..., flavour="cobalt")``),
for tests only. They behave as Cobalt's clients do where PSI/J's cobalt executor can tell:

- ``qsub [options] <script>``: options from the command line and from the ``#COBALT`` lines
  that directly follow the script's ``#!`` line (Cobalt stops at the first other line, a blank
  one included, and splits each line at whitespace, without shell quoting). ``--time`` and
  ``--nodecount`` are required, the time must be minutes, ``HH:MM``, ``HH:MM:SS`` or
  ``DD:HH:MM:SS``, the script must be executable and the queue must exist (``default`` when none
  is given), each refused with Cobalt's message and exit status 1. Prints the job id (Cobalt's
  ids are integers; these start at 100001).
- ``qstat -l --header=Jobid:State <ids>``: Cobalt's vertical report of the jobs it still knows;
  a job is forgotten once it ended, and exit status 1 when none of the ids is known.
- ``qdel <ids>``: kills the jobs, prints the "Deleted Jobs" table.

The job runs with ``COBALT_JOBID``, ``COBALT_NODEFILE`` (one line per node), ``COBALT_PARTNAME``,
``COBALT_PARTSIZE``/``COBALT_BLOCKSIZE`` (nodes), ``COBALT_JOBSIZE`` (processes) and the ``--env``
values; its output goes to ``<cwd>/<id>.output`` and ``.error`` unless ``-o``/``-e`` name files.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

COBALT_ID_BASE = 100000
DEFAULT_QUEUES = "default,debug"
_VALUED = {"-n": "nodecount", "--nodecount": "nodecount", "-t": "time", "--time": "time", "-q": "queue",
           "--queue": "queue", "-A": "project", "--project": "project", "--cwd": "cwd", "--env": "env",
           "--proccount": "proccount", "--jobname": "jobname", "-e": "error", "--error": "error",
           "-o": "output", "--output": "output", "-O": "outputprefix", "--mode": "mode", "--attrs": "attrs",
           "-M": "notify", "-i": "inputfile", "--dependencies": "dependencies", "-u": "umask", "--umask": "umask"}
_FLAGS = {"-h": "held", "-d": "debug", "-v": "verbose", "-I": "interactive"}


class Refused(Exception):
    """qsub refuses the job (the message goes to stderr, exit status 1)."""


def _directive_args(script: str) -> list[str]:
    """The words of the ``#COBALT`` lines right after ``#!``, as Cobalt's qsub reads them."""
    lines = script.splitlines()
    words: list[str] = []
    if not lines or not lines[0].startswith("#!"):
        return words
    for line in lines[1:]:
        if not line.startswith("#COBALT ") or len(line) <= len("#COBALT "):
            break
        words.extend(line[len("#COBALT "):].split())
    return words


def parse(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Cobalt's qsub options (``--opt value``, ``--opt=value``; ``--env`` given twice is joined
    with ``:``) and the command; ``Refused`` on an unknown option."""
    opts: dict[str, Any] = {}
    index = 0
    while index < len(argv):
        arg = argv[index]
        if not arg.startswith("-"):
            return opts, argv[index:]
        name, eq, value = arg.partition("=")
        if name in _FLAGS and not eq:
            opts[_FLAGS[name]] = True
        elif name in _VALUED:
            if not eq:
                index += 1
                if index >= len(argv):
                    raise Refused(f"qsub: error: {name} option requires an argument")
                value = argv[index]
            key = _VALUED[name]
            opts[key] = f"{opts[key]}:{value}" if key == "env" and key in opts else value
        else:
            raise Refused(f"qsub: error: no such option: {name}")
        index += 1
    return opts, []


def minutes(spec: str) -> int:
    """Cobalt's ``get_time``: minutes, HH:MM, HH:MM:SS or DD:HH:MM:SS as whole minutes."""
    units = spec.split(":")
    if len(units) > 4:
        raise Refused("invalid time specification: time may be specified as minutes, HH:MM, HH:MM:SS, "
                      "or DD:HH:MM:SS")
    names = {1: ["minutes"], 2: ["hours", "minutes"], 3: ["hours", "minutes", "seconds"],
             4: ["days", "hours", "minutes", "seconds"]}[len(units)]
    values = {}
    for key, text in zip(names, units, strict=True):
        try:
            values[key] = int(text)
        except ValueError:
            raise Refused(f"invalid time specification: illegal value '{text}' for {key}") from None
    if not 0 <= values.get("seconds", 0) <= 59:
        raise Refused(f"invalid time specification: seconds value '{values['seconds']}' outside range [0, 59]")
    return (values.get("days", 0) * 1440 + values.get("hours", 0) * 60 + values.get("minutes", 0)
            + (1 if values.get("seconds", 0) else 0))


def job_spec(argv: list[str]) -> dict[str, Any]:
    """What ``qsub argv`` submits (queue, sizes, cwd, env, files), or ``Refused``."""
    opts, command = parse(argv)
    if not command:
        raise Refused("No executable or script specified")
    script = Path(command[0])
    if not script.is_file():
        raise Refused(f"command {script} not found, or is not a file")
    opts, command = parse(_directive_args(script.read_text()) + argv)
    if not os.access(script, os.X_OK):
        raise Refused(f"command {script} is not executable")
    for required in ("time", "nodecount"):
        if not opts.get(required):
            raise Refused(f"'{required}' not provided")
    walltime = minutes(str(opts["time"]))
    try:
        nodes = int(opts["nodecount"])
        procs = int(opts.get("proccount") or nodes)
    except ValueError:
        raise Refused("non-integer node count specified") from None
    if nodes < 1:
        raise Refused("node count out of realistic range")
    queue = opts.get("queue") or "default"
    if queue not in os.environ.get("FAKE_BATCH_QUEUES", DEFAULT_QUEUES).split(","):
        raise Refused(f"Queue '{queue}' does not exist")
    env: dict[str, str] = {}
    for item in re.split(r":(?=\w+\b=)", opts.get("env") or "") if opts.get("env") else []:
        name, sep, value = item.partition("=")
        if not sep:
            raise Refused(f"Improperly formatted argument to env : {item!r}")
        env[name] = value
    cwd = opts.get("cwd") or os.getcwd()
    if not os.path.isdir(cwd):
        raise Refused(f"Error: dir '{cwd}' is not a directory")
    return {"queue": queue, "nodes": nodes, "procs": procs, "walltime": walltime, "cwd": cwd, "env": env,
            "name": opts.get("jobname"), "output": opts.get("output"), "error": opts.get("error"),
            "command": [str(script.absolute()), *command[1:]], "options": argv}


def job_environment(record: dict[str, Any], nodefile: Path, hosts: list[str]) -> dict[str, str]:
    """What a Cobalt job sees: its id, node file (one line per node), sizes and ``--env`` values."""
    nodefile.write_text("".join(f"{host}\n" for host in hosts))
    part = ",".join(hosts)
    return {"COBALT_JOBID": record["id"], "COBALT_NODEFILE": str(nodefile), "COBALT_PARTNAME": part,
            "COBALT_BLOCKNAME": part, "COBALT_PARTSIZE": str(len(hosts)), "COBALT_BLOCKSIZE": str(len(hosts)),
            "COBALT_JOBSIZE": str(record["slots"]), "COBALT_QUEUE": record.get("queue") or "default",
            **record.get("env", {})}


def output_paths(record: dict[str, Any]) -> tuple[str, str]:
    """Where the job's stdout and stderr go (``-o``/``-e``, else ``<cwd>/<id>.output``/``.error``)."""
    cwd = record["cwd"]

    def place(given: str | None, suffix: str) -> str:
        if not given:
            return os.path.join(cwd, f"{record['id']}.{suffix}")
        return given if given.startswith("/") else os.path.join(cwd, given)

    return place(record.get("output"), "output"), place(record.get("error"), "error")


def qstat(args: list[str], load: Any) -> int:
    """``qstat -l --header=Jobid:State <ids>`` (and the header-only list form): Cobalt's vertical
    report of the given jobs it still knows; exit status 1 when it knows none of them."""
    ids = [a for a in args if a.isdigit()]
    rows = []
    for job_id in ids:
        record = load(job_id)
        if record is None or record["state"] == "finished":
            continue  # Cobalt forgets a job once it ended
        rows.append((job_id, {"queued": "queued", "running": "running"}[record["state"]]))
    if ids and not rows:
        return 1
    for job_id, state in rows:
        print(f"Jobid: {job_id}\n    State : {state}\n")
    return 0


def qdel(args: list[str], load: Any, cancel: Any) -> int:
    """``qdel <ids>``: cancel the jobs Cobalt still knows, list them as deleted."""
    user = os.environ.get("USER") or str(os.getuid())
    deleted = []
    for job_id in [a for a in args if not a.startswith("-")]:
        record = load(job_id)
        if record is not None and record["state"] != "finished":
            cancel("cobalt", job_id)
            deleted.append(job_id)
    time.sleep(0.1)
    if deleted:
        width = max(len("JobID"), *(len(j) for j in deleted))
        print("      Deleted Jobs")
        print(f"{'JobID':<{width}}  {'User':<{len(user)}}  ")
        print("=" * (width + len(user) + 4))
        for job_id in deleted:
            print(f"{job_id:<{width}}  {user}  ")
    return 0


def qsub_main(args: list[str]) -> tuple[int, dict[str, Any] | None]:
    """Validate a submission; (1, None) after printing Cobalt's message when it is refused."""
    try:
        return 0, job_spec(args)
    except Refused as exc:
        print(str(exc), file=sys.stderr)
        return 1, None
