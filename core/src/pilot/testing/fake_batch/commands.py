"""The FAKE PBS (``qsub``/``qstat``/``qdel``) and LSF (``bsub``/``bjobs``/``bkill``) commands,
for tests only. Output formats follow what PSI/J's pbs and lsf executors parse. Every job runs
at once on this host (after ``FAKE_BATCH_HOLD`` seconds queued) under a detached runner."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pilot.testing.fake_batch import STATE_ENV

PBS_CANCELED_EXIT = 265  # what PSI/J's pbs executor reads as CANCELED
DEFAULT_QUEUES = "workq,normal,debug"


def _state_dir() -> Path:
    return Path(os.environ[STATE_ENV])


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    with open(_state_dir() / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _job_dir(job_id: str) -> Path:
    return _state_dir() / "jobs" / job_id


def _load(job_id: str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((_job_dir(job_id) / "record.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def _save(record: dict[str, Any]) -> None:
    path = _job_dir(record["id"]) / "record.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def _update(job_id: str, **changes: Any) -> dict[str, Any]:
    with _locked():
        record = _load(job_id) or {}
        record.update(changes)
        _save(record)
        return record


def _directives(script: str, prefix: str) -> list[str]:
    """The options of every ``#PBS``/``#BSUB`` line, in order, shell-unquoted."""
    options: list[str] = []
    for line in script.splitlines():
        if line.startswith(prefix + " "):
            options.extend(shlex.split(line[len(prefix):], comments=False))
    return options


def _option(options: list[str], flag: str) -> str | None:
    value = None
    for index, option in enumerate(options[:-1]):
        if option == flag:
            value = options[index + 1]
    return value


def _pbs_slots(options: list[str]) -> int:
    total = 0
    for index, option in enumerate(options[:-1]):
        if option == "-l" and options[index + 1].startswith("select="):
            parts = options[index + 1][len("select="):].split(":")
            nodes = int(parts[0]) if parts[0].isdigit() else 1
            fields = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
            total += nodes * int(fields.get("mpiprocs") or fields.get("ncpus") or 1)
    return total or 1


def submit(system: str, args: list[str]) -> int:
    """``qsub <script>`` / ``bsub <script>``: record the job, start its runner, print its id."""
    if not args:
        print(f"usage: {'qsub' if system == 'pbs' else 'bsub'} <script>", file=sys.stderr)
        return 2
    script = Path(args[-1]).read_text()
    options = _directives(script, "#PBS" if system == "pbs" else "#BSUB")
    queue = _option(options, "-q")
    allowed = os.environ.get("FAKE_BATCH_QUEUES", DEFAULT_QUEUES).split(",")
    if queue and queue not in allowed:
        if system == "pbs":
            print("qsub: Unknown queue", file=sys.stderr)
            return 170
        print(f"{queue}: No such queue. Job not submitted.")
        return 255
    with _locked():
        counter = _state_dir() / "counter"
        number = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(number))
    job_id = f"{number}.fakepbs" if system == "pbs" else str(number)
    slots = _pbs_slots(options) if system == "pbs" else int(_option(options, "-n") or 1)
    cwd = (_option(options, "-cwd") if system == "lsf" else None) or os.getcwd()
    _job_dir(job_id).mkdir(parents=True)
    (_job_dir(job_id) / "script").write_text(script)
    _save({"id": job_id, "system": system, "state": "queued", "queue": queue, "slots": slots, "cwd": cwd,
           "name": _option(options, "-N" if system == "pbs" else "-J"), "options": options,
           "submitted": time.time(), "exit": None, "pid": None})
    subprocess.Popen([sys.executable, "-m", "pilot.testing.fake_batch", "run", job_id], cwd=cwd,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)
    print(job_id if system == "pbs" else f"Job <{job_id}> is submitted to queue <{queue or 'normal'}>.")
    return 0


def run_job(job_id: str) -> int:
    """The detached runner: wait while 'queued', run the script as the batch job, record its end."""
    record = _load(job_id)
    if record is None:
        return 1
    time.sleep(float(os.environ.get("FAKE_BATCH_HOLD") or 0))
    job_dir = _job_dir(job_id)
    code = PBS_CANCELED_EXIT
    if not (job_dir / "canceled").exists():
        host, slots = socket.gethostname(), int(record["slots"])
        nodefile = job_dir / "nodefile"
        nodefile.write_text(f"{host}\n" * slots)
        if record["system"] == "pbs":
            extra = {"PBS_JOBID": job_id, "PBS_NODEFILE": str(nodefile), "PBS_O_WORKDIR": record["cwd"],
                     "PBS_JOBNAME": record.get("name") or "job"}
        else:
            extra = {"LSB_JOBID": job_id, "LSB_MCPU_HOSTS": f"{host} {slots}", "LSB_DJOB_HOSTFILE": str(nodefile),
                     "LSB_HOSTS": " ".join([host] * slots), "LSB_JOBNAME": record.get("name") or "job"}
            options = record.get("options") or []
            for index, option in enumerate(options[:-1]):  # bsub -env NAME=value
                name, sep, value = options[index + 1].partition("=")
                if option == "-env" and sep:
                    extra[name] = value
        proc = subprocess.Popen(["/bin/bash", str(job_dir / "script")], cwd=record["cwd"],
                                env={**os.environ, **extra}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _update(job_id, state="running", pid=proc.pid, started=time.time())
        code = proc.wait()
    canceled = (job_dir / "canceled").exists()
    if canceled:
        _reap(job_dir)
    _update(job_id, state="finished", exit=PBS_CANCELED_EXIT if canceled else code, finished=time.time())
    return 0


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it (even those that left its session)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _reap(job_dir: Path) -> None:
    """After a cancel: SIGKILL whatever the job left behind after a grace period."""
    try:
        pids = [int(p) for p in (job_dir / "canceled").read_text().split()]
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def cancel(system: str, job_id: str) -> tuple[int, str]:
    """Kill a job's whole process tree (SIGTERM; the runner SIGKILLs leftovers)."""
    record = _load(job_id)
    if record is None:
        return (153, f"qdel: Unknown Job Id {job_id}") if system == "pbs" else \
            (255, f"Job <{job_id}>: No matching job found")
    if record["state"] == "finished":
        return (35, f"qdel: Job has finished {job_id}") if system == "pbs" else \
            (255, f"Job <{job_id}>: Job has already finished")
    pids = process_tree(record["pid"]) if record.get("pid") else []
    (_job_dir(job_id) / "canceled").write_text(" ".join(map(str, pids)))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    return 0, "" if system == "pbs" else f"Job <{job_id}> is being terminated"


def _ids(args: list[str], with_value: tuple[str, ...]) -> list[str]:
    ids, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in with_value:
            skip = True
        elif not arg.startswith("-"):
            ids.append(arg)
    return ids


def qstat(args: list[str]) -> int:
    """``qstat -f -F json -x <ids>``: PBS Pro's JSON job report."""
    report: dict[str, Any] = {}
    status = 0
    for job_id in _ids(args, ("-F", "-u")):
        record = _load(job_id)
        if record is None:
            print(f"qstat: Unknown Job Id {job_id}", file=sys.stderr)
            status = 153
            continue
        state = {"queued": "Q", "running": "R", "finished": "F"}[record["state"]]
        entry: dict[str, Any] = {"Job_Name": record.get("name") or "job", "job_state": state,
                                 "queue": record.get("queue") or "workq"}
        if state == "F":
            entry["Exit_status"] = record["exit"]
        report[job_id] = entry
    print(json.dumps({"timestamp": int(time.time()), "pbs_version": "fake", "pbs_server": "fakepbs",
                      "Jobs": report}))
    return status


def bjobs(args: list[str]) -> int:
    """``bjobs -o '...' -json -a <ids>``: LSF's JSON job report."""
    records = []
    for job_id in _ids(args, ("-o", "-u")):
        record = _load(job_id)
        if record is None:
            records.append({"JOBID": job_id, "ERROR": f"Job <{job_id}> is not found"})
            continue
        if record["state"] == "finished":
            stat = "DONE" if record["exit"] == 0 else "EXIT"
        else:
            stat = "PEND" if record["state"] == "queued" else "RUN"
        records.append({"JOBID": job_id, "STAT": stat, "EXIT_REASON": "", "KILL_REASON": "", "SUSPEND_REASON": ""})
    print(json.dumps({"COMMAND": "bjobs", "JOBS": len(records), "RECORDS": records}))
    return 0


def main(argv: list[str]) -> int:
    """Dispatch one fake command."""
    if not argv:
        print("usage: python -m pilot.testing.fake_batch <command> [args]", file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    if command in ("qsub", "bsub"):
        return submit("pbs" if command == "qsub" else "lsf", args)
    if command == "run":
        return run_job(args[0])
    if command == "qstat":
        return qstat(args)
    if command == "bjobs":
        return bjobs(args)
    if command in ("qdel", "bkill"):
        status = 0
        for job_id in _ids(args, ()):
            code, message = cancel("pbs" if command == "qdel" else "lsf", job_id)
            if message:
                print(message, file=sys.stderr if code else sys.stdout)
            status = status or code
        return status
    print(f"fake_batch: unknown command {command!r}", file=sys.stderr)
    return 2
