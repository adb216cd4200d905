"""Fault: the client process killed (SIGKILL) in the middle of a bulk submission, with the Redis
store; a new process reconnects with ``cds_url`` and finds every accepted unit, which finishes.
Bulk submission is atomic per call: the store holds whole chunks only."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pilot import ComputeDataService, State
from pilot.testing.fixtures import PilotEnv
from pilot.urls import redact

pytestmark = pytest.mark.redis
CHUNK = 1000

SETUP = textwrap.dedent("""
    import sys, time
    from pilot import ComputeDataService, PilotComputeService
    pcs = PilotComputeService(sys.argv[1])
    pilot = pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 4,
                              "working_directory": sys.argv[2]})
    cds = ComputeDataService(coordination_url=sys.argv[1])
    cds.add_pilot_compute_service(pcs)
    print(cds.get_url())
""")

SUBMIT = textwrap.dedent("""
    import sys
    from pilot import ComputeDataService
    cds = ComputeDataService(cds_url=sys.argv[1])
    for chunk in range(1000):
        cds.submit_compute_units([{"executable": f"echo c{chunk}-{n} >> {sys.argv[2]}", "name": f"c{chunk}-{n}"}
                                  for n in range(int(sys.argv[3]))])
        print("accepted", (chunk + 1) * int(sys.argv[3]), flush=True)
""")


def test_client_killed_mid_submission_then_reconnected(pilot_env: PilotEnv, redis_store_url: str,
                                                       redis_password: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every unit accepted before the kill is in the store and ends Done exactly once."""
    log = pilot_env.root / "ran.log"
    store_url = redact(redis_store_url)  # every process here finds the password in the environment
    monkeypatch.setenv("PILOT_REDIS_PASSWORD", redis_password)
    env = dict(os.environ)
    setup = subprocess.run([sys.executable, "-c", SETUP, store_url, str(pilot_env.work)], env=env,
                           capture_output=True, text=True, timeout=60, check=False)
    assert setup.returncode == 0, setup.stderr
    cds_url = setup.stdout.strip().splitlines()[-1]
    assert "@" not in cds_url
    submitter = subprocess.Popen([sys.executable, "-c", SUBMIT, cds_url, str(log), str(CHUNK)], env=env,
                                 stdout=subprocess.PIPE, text=True)
    assert submitter.stdout is not None
    accepted = 0
    while accepted < 3 * CHUNK:
        line = submitter.stdout.readline()
        assert line, "the submitter ended early"
        accepted = int(line.split()[1])
    time.sleep(0.03)  # into the next bulk call
    submitter.send_signal(signal.SIGKILL)
    submitter.wait()
    accepted += sum(CHUNK for line in submitter.stdout.read().splitlines() if line.startswith("accepted"))
    cds = ComputeDataService(cds_url=cds_url)
    try:
        cds.wait(timeout=180)
        records = cds._store.find_units(cds_id=cds.id, fields=("id", "state", "description"))
        assert len(records) >= accepted
        assert len(records) % CHUNK == 0, "a bulk submission was stored in part"
        assert collections.Counter(r["state"] for r in records) == {State.Done: len(records)}
        names = [r["description"]["name"] for r in records]
        counts = collections.Counter(log.read_text().split())
        assert set(counts) == set(names)
        assert max(counts.values()) == 1
    finally:
        cds.cancel()
