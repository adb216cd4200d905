"""The FAKE PBS (``qsub``/``qstat``/``qdel``), LSF (``bsub``/``bjobs``/``bkill``) and Cobalt
(``pilot.testing.fake_batch.cobalt``) commands, for tests only. Output formats follow what PSI/J's
pbs, lsf and cobalt executors parse. Every job runs on this host (after ``FAKE_BATCH_HOLD``
seconds queued) under a detached runner; ``pilot.testing.fake_batch.nodes`` gives it several
node names and the ``pbsdsh``/``blaunch`` that reach them."""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pilot.testing.fake_batch import STATE_ENV, cobalt, nodes

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


def _new_id(system: str) -> str:
    with _locked():
        counter = _state_dir() / "counter"
        number = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(number))
    return {"pbs": f"{number}.fakepbs", "lsf": str(number)}.get(system, str(cobalt.COBALT_ID_BASE + number))


def _start(record: dict[str, Any], script: str) -> None:
    _job_dir(record["id"]).mkdir(parents=True)
    (_job_dir(record["id"]) / "script").write_text(script)
    _save({"state": "queued", "submitted": time.time(), "exit": None, "pid": None, **record})
    subprocess.Popen([sys.executable, "-m", "pilot.testing.fake_batch", "run", record["id"]], cwd=record["cwd"],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)


def submit_cobalt(args: list[str]) -> int:
    """Cobalt's ``qsub [options] <script>``: validate as Cobalt does, record, run, print the id."""
    code, spec = cobalt.qsub_main(args)
    if spec is None:
        return code
    job_id = _new_id("cobalt")
    command = spec.pop("command")
    _start({"id": job_id, "system": "cobalt", "slots": spec["procs"], "argv": command, **spec},
           Path(command[0]).read_text())
    print(job_id)
    return 0


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
    job_id = _new_id(system)
    slots = _pbs_slots(options) if system == "pbs" else int(_option(options, "-n") or 1)
    cwd = (_option(options, "-cwd") if system == "lsf" else None) or os.getcwd()
    _start({"id": job_id, "system": system, "queue": queue, "slots": slots, "cwd": cwd,
            "name": _option(options, "-N" if system == "pbs" else "-J"), "options": options}, script)
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
        hosts = nodes.hosts_per_slot(int(record["slots"]))
        nodefile = job_dir / "nodefile"
        nodefile.write_text("".join(f"{host}\n" for host in hosts))
        extra = _job_environment(record, hosts, nodefile)
        env = {**os.environ, **extra}
        (job_dir / "environ.json").write_text(json.dumps(env))  # what pbsdsh gives its tasks
        out_path, err_path = cobalt.output_paths(record) if record["system"] == "cobalt" else \
            (str(job_dir / "output"), str(job_dir / "error"))
        argv = record.get("argv") or ["/bin/bash", str(job_dir / "script")]
        with open(out_path, "ab") as out, open(err_path, "ab") as err:
            proc = subprocess.Popen(argv, cwd=record["cwd"], env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err)
        _update(job_id, state="running", pid=proc.pid, started=time.time())
        code = proc.wait()
    canceled = (job_dir / "canceled").exists()
    if canceled:
        _reap(job_dir)
    _update(job_id, state="finished", exit=PBS_CANCELED_EXIT if canceled else code, finished=time.time())
    return 0


def _job_environment(record: dict[str, Any], hosts: list[str], nodefile: Path) -> dict[str, str]:
    """The variables the batch system gives the job script (its node list among them)."""
    counts = list(collections.Counter(hosts).items())
    name = record.get("name") or "job"
    if record["system"] == "cobalt":
        return cobalt.job_environment(record, job_dir_file(record["id"], "cobalt-nodefile"), [h for h, _ in counts])
    if record["system"] == "pbs":
        return {"PBS_JOBID": record["id"], "PBS_NODEFILE": str(nodefile), "PBS_O_WORKDIR": record["cwd"],
                "PBS_JOBNAME": name}
    extra = {"LSB_JOBID": record["id"], "LSB_MCPU_HOSTS": " ".join(f"{h} {n}" for h, n in counts),
             "LSB_DJOB_HOSTFILE": str(nodefile), "LSB_HOSTS": " ".join(hosts), "LSB_JOBNAME": name}
    options = record.get("options") or []
    for index, option in enumerate(options[:-1]):  # bsub -env NAME=value
        key, sep, value = options[index + 1].partition("=")
        if option == "-env" and sep:
            extra[key] = value
    return extra


def job_dir_file(job_id: str, name: str) -> Path:
    """A file of job ``job_id``'s record directory."""
    return _job_dir(job_id) / name


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
    if command == "cobalt-qsub":
        return submit_cobalt(args)
    if command == "cobalt-qstat":
        return cobalt.qstat(args, _load)
    if command == "cobalt-qdel":
        return cobalt.qdel(args, _load, cancel)
    if command in ("pbsdsh", "blaunch"):
        return nodes.pbsdsh(args) if command == "pbsdsh" else nodes.blaunch(args)
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
