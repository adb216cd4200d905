"""Fault: the store unreachable for 10 s in the middle of a run. The test starts its own
redis-server (append-only file on, a free port, a private directory) so the shared one keeps
serving the other tests; it stops it (SIGTERM) and starts it again on the same files. Agent and
client retry with backoff and carry on; every unit is Done exactly once."""

from __future__ import annotations

import collections
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pilot import ComputeDataService, PilotComputeService, State
from pilot.testing import wait_for
from pilot.testing.fixtures import PilotEnv

pytestmark = pytest.mark.redis
OUTAGE = 10.0
UNITS = 300


class PrivateRedis:
    """A redis-server of this test only."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.password = uuid.uuid4().hex
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory),
             "--appendonly", "yes", "--save", "", "--requirepass", self.password,
             "--logfile", str(self.directory / "redis.log")], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ping = subprocess.run(["redis-cli", "-p", str(self.port), "--no-auth-warning", "-a", self.password,
                                   "ping"], capture_output=True, text=True, check=False)
            if ping.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        pytest.fail("the private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: redis writes its append-only file and exits
            self.proc.wait(timeout=30)


@pytest.fixture
def private_redis(tmp_path: Path, require_service: Callable[[str, str], None]) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        require_service("redis-server", "redis-server/redis-cli not on PATH")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = PrivateRedis(directory)
    server.start()
    yield server
    server.stop()




def test_store_unreachable_for_ten_seconds(pilot_env: PilotEnv, private_redis: PrivateRedis,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PILOT_REDIS_CREDENTIALS", str(pilot_env.root / "redis-passwords"))
    url = f"redis://:{private_redis.password}@127.0.0.1:{private_redis.port}/0"
    log = pilot_env.root / "ran.log"
    pcs = PilotComputeService(url)
    try:
        pilot = pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 2,
                                  "working_directory": str(pilot_env.work)})
        wait_for(lambda: pilot.get_state() == State.Running, 30, "the pilot to run")
        cds = ComputeDataService(coordination_url=url)
        cds.add_pilot_compute_service(pcs)
        units = cds.submit_compute_units([{"executable": f"sleep 0.05; echo u{n} >> {log}", "name": f"u{n}"}
                                          for n in range(UNITS)])
        wait_for(lambda: log.exists() and len(log.read_text().split()) >= 30, 60, "some units to run")
        private_redis.stop()
        time.sleep(OUTAGE)
        during = len(log.read_text().split())
        private_redis.start()
        cds.wait(timeout=180)
        records = cds._store.find_units(cds_id=cds.id, fields=("id", "state"))
        assert len(records) == UNITS == len(units)
        assert collections.Counter(r["state"] for r in records) == {State.Done: UNITS}
        counts = collections.Counter(log.read_text().split())
        assert set(counts) == {f"u{n}" for n in range(UNITS)}
        assert max(counts.values()) == 1
        assert during < UNITS, "the outage was over before the run: it proved nothing"
        assert pilot.get_state() == State.Running, pilot.get_details()["reason"]
    finally:
        pcs.cancel()
