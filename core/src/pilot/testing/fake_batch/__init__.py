"""FAKE PBS, LSF and Cobalt batch commands for tests: ``qsub``/``qstat``/``qdel`` (PBS's, or
Cobalt's with ``flavour="cobalt"``: the names are the same), ``bsub``/``bjobs``/``bkill``, and the
node launchers ``pbsdsh`` and ``blaunch``; enough for PSI/J's pbs, lsf and cobalt executors (and
so pilot-psij's ``pbs://``, ``lsf://`` and ``cobalt://`` adaptors) to submit, poll and cancel, and
for a pilot's agent to reach the job's other nodes. They are not a batch system.

A submitted job script runs at once on this host, in the background, with the environment a
real job would see (``PBS_JOBID``/``PBS_NODEFILE``, ``LSB_JOBID``/``LSB_MCPU_HOSTS``,
``COBALT_JOBID``/``COBALT_NODEFILE``...). Job records live in a state directory, so tests can read
the scripts PSI/J generated. Knobs (environment of the command, so of the test process):

- ``FAKE_BATCH_HOLD``: seconds a job stays queued before it runs (default 0).
- ``FAKE_BATCH_QUEUES``: comma-separated queue names that exist (default ``workq,normal,debug``,
  for Cobalt ``default,debug``); a job for any other queue is rejected the way the real command
  rejects it.
- ``FAKE_BATCH_NODES``: comma-separated names of further nodes (default none): the job's slots
  are spread over this host and them; they are all this machine (``pilot.testing.fake_batch.nodes``).

Use ``install(bin_dir, state_dir)`` and put ``bin_dir`` first on ``PATH``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

COMMANDS = ("qsub", "qstat", "qdel", "bsub", "bjobs", "bkill", "pbsdsh", "blaunch")
FLAVOURS = ("pbs", "cobalt")
STATE_ENV = "FAKE_BATCH_DIR"


def install(bin_dir: Path, state_dir: Path, flavour: str = "pbs") -> Path:
    """Write the fake commands into ``bin_dir`` (wrappers that run this package with this
    Python, keeping their jobs in ``state_dir``); ``qsub``/``qstat``/``qdel`` are PBS's, or
    Cobalt's with ``flavour="cobalt"``. Return ``bin_dir`` for ``PATH``."""
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, not {flavour!r}")
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    for command in COMMANDS:
        name = f"cobalt-{command}" if flavour == "cobalt" and command.startswith("q") else command
        path = bin_dir / command
        path.write_text(f"#!/bin/sh\n# FAKE {command} for tests (pilot.testing.fake_batch)\n"
                        f"{STATE_ENV}='{state_dir}' exec '{sys.executable}' -m pilot.testing.fake_batch "
                        f"{name} \"$@\"\n")
        path.chmod(0o755)
    return bin_dir


def jobs(state_dir: Path) -> dict[str, dict[str, Any]]:
    """Every fake job's record by id: ``system``, ``state``, ``script`` (its text), ``exit``..."""
    out = {}
    for record in sorted((state_dir / "jobs").glob("*/record.json")):
        data = json.loads(record.read_text())
        data["script"] = (record.parent / "script").read_text()
        data["canceled"] = (record.parent / "canceled").exists()
        out[data["id"]] = data
    return out


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (tests use it to check that cancel killed the job)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
