"""Kubernetes benchmark, against the EMULATED API server of ``pilot_kubernetes.testing`` (an
HTTP emulation on loopback whose test kubelet runs each Pod's command as a local process; not
Kubernetes): units per second through a 2-slot ``k8s://`` pilot beside a 2-slot fork pilot with
the same Redis store in the same run, and the API requests that many ``k8s://`` pilots cost.

``python -m pilot_kubernetes.bench -n 1000 --pilots 10 --seconds 60`` (or ``tox -e bench-k8s``).
The store is ``--store``, else ``$PILOT_COORDINATION_URL``, else the test redis-server named by
``PILOT_TEST_REDIS_PORT`` and ``PILOT_TEST_REDIS_PASSWORD_FILE``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

SERVICE_URL = "k8s://emulated/default"


def test_redis_url() -> str:
    """The test redis-server's URL (with its password and a fresh key prefix)."""
    port, password_file = os.environ.get("PILOT_TEST_REDIS_PORT"), os.environ.get("PILOT_TEST_REDIS_PASSWORD_FILE")
    if not port or not password_file:
        raise SystemExit("no store: pass --store redis://..., or set PILOT_COORDINATION_URL, or "
                         "PILOT_TEST_REDIS_PORT and PILOT_TEST_REDIS_PASSWORD_FILE")
    password = Path(password_file).read_text().strip()
    return f"redis://:{password}@127.0.0.1:{port}/0?prefix=bench{os.getpid()}"


def wait_running(pilots: list[Any]) -> None:
    """Wait until every pilot runs; exit with the reason when one does not."""
    from pilot import State

    for pilot in pilots:
        while (state := pilot.get_state()) in (State.New, State.Pending):
            time.sleep(0.01)
        if state != State.Running:
            raise SystemExit(f"pilot did not start: {pilot.get_details()['reason']}")


def unit_rate(units: int, service_url: str, store: str, work: str) -> dict[str, float]:
    """``units`` x /bin/true through one 2-slot pilot of ``service_url``: units/s, startup."""
    from pilot import ComputeDataService, PilotComputeService, State

    pcs = PilotComputeService(store)
    t0 = time.perf_counter()
    pilot = pcs.create_pilot({"service_url": service_url, "number_of_processes": 2, "working_directory": work})
    wait_running([pilot])
    startup = time.perf_counter() - t0
    cds = ComputeDataService(coordination_url=store)
    cds.add_pilot_compute_service(pcs)
    t1 = time.perf_counter()
    cds.submit_compute_units([{"executable": "/bin/true"}] * units)
    cds.wait()
    total = time.perf_counter() - t1
    done = len(cds._store.find_units(cds_id=cds.id, states=[State.Done], fields=("id",)))
    cds.cancel()
    pcs.cancel()
    return {"rate": units / total, "startup": startup, "done": done}


def api_requests(cluster: Any, pilots: int, seconds: float, store: str, work: str) -> tuple[int, int]:
    """API requests served while ``pilots`` 1-slot k8s:// pilots start, run units for
    ``seconds`` and are canceled; and how many units they ran."""
    from pilot import ComputeDataService, PilotComputeService, State

    before = cluster.request_count()
    pcs = PilotComputeService(store)
    handles = [pcs.create_pilot({"service_url": SERVICE_URL, "number_of_processes": 1, "working_directory": work})
               for _ in range(pilots)]
    wait_running(handles)
    cds = ComputeDataService(coordination_url=store)
    cds.add_pilot_compute_service(pcs)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # keep every pilot busy with short units
        cds.submit_compute_units([{"executable": "/bin/sleep", "arguments": ["0.2"]}] * pilots)
        time.sleep(0.2)
    done = len(cds._store.find_units(cds_id=cds.id, states=[State.Done], fields=("id",)))
    cds.cancel()
    pcs.cancel()
    return cluster.request_count() - before, done


def main(argv: list[str] | None = None) -> int:
    """Print the figures."""
    parser = argparse.ArgumentParser(prog="python -m pilot_kubernetes.bench", description=__doc__)
    parser.add_argument("-n", "--units", type=int, default=1000, help="units through each pilot (default 1000)")
    parser.add_argument("--pilots", type=int, default=10, help="k8s:// pilots for the API-request count (default 10)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long those pilots run units (default 60)")
    parser.add_argument("--store", default=None, help="a store both sides reach (a redis:// URL)")
    args = parser.parse_args(argv)
    store = args.store or os.environ.get("PILOT_COORDINATION_URL") or test_redis_url()
    from pilot.bench import print_rows
    from pilot_kubernetes.testing import EmulatedCluster

    root = Path(tempfile.mkdtemp(prefix="pilot-bench-k8s-"))
    (root / "pod-home").mkdir()
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(root / "pod-home")}
    with EmulatedCluster(root / "cluster", base_env=base) as cluster:
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        fork = unit_rate(args.units, "fork://localhost", store, str(root))
        k8s = unit_rate(args.units, SERVICE_URL, store, str(root))
        requests, ran = api_requests(cluster, args.pilots, args.seconds, store, str(root))
        from pilot.session import default_session

        close = getattr(default_session().adaptor(SERVICE_URL), "close", None)
        if close is not None:
            close()  # the executor's watches end before the emulated server does
    rows = [
        ("fork pilot, 2 slots, Redis", f"{fork['rate']:,.0f} units/s", f"N={args.units}, {int(fork['done'])} Done"),
        ("k8s pilot, 2 slots, Redis", f"{k8s['rate']:,.0f} units/s", f"N={args.units}, {int(k8s['done'])} Done"),
        ("  ratio to fork", f"{k8s['rate'] / fork['rate']:.2f}", "bar: >= 0.8"),
        ("  create_pilot to Running", f"{k8s['startup']:.2f} s", "emulated API server"),
        (f"API requests, {args.pilots} pilots", f"{requests}",
         f"{args.seconds:g} s of units ({ran} ran), start to cancel; bar: < 100"),
    ]
    print_rows(rows, value_width=16)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
