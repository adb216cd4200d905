"""The same workload through pilot's peers (``--peers``): N x ``subprocess.run(["/bin/true"])``
on 2 workers of a Dask ``LocalCluster`` and of a Parsl ``HighThroughputExecutor`` (local
provider). Both are imported only here, only when asked for; ``tox -e bench`` installs them."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

MISSING = ("--peers runs the workload through Dask and Parsl, which are not installed here ({names}): "
           "install with tox -e bench, whose env has them (or pip install 'dask[distributed]' parsl)")


def missing_peers() -> list[str]:
    """The peer packages that cannot be imported here."""
    return [name for name in ("distributed", "parsl") if importlib.util.find_spec(name) is None]


def run_true() -> int:
    """One task: ``/bin/true``; its return code."""
    return subprocess.run(["/bin/true"], check=False).returncode


def dask_run(units: int, workers: int) -> dict[str, float]:
    """Tasks/s of ``units`` x /bin/true through a Dask LocalCluster of ``workers`` x 1 thread."""
    from dask.distributed import Client, LocalCluster  # type: ignore[import-untyped,import-not-found,unused-ignore]

    t0 = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None, processes=True) as cluster, \
            Client(cluster) as client:
        startup = time.perf_counter() - t0
        t1 = time.perf_counter()
        futures = client.map(subprocess.run, [["/bin/true"]] * units, pure=False)
        done = sum(1 for result in client.gather(futures) if result.returncode == 0)
        total = time.perf_counter() - t1
    return {"rate": units / total, "startup": startup, "done": done}


def parsl_run(units: int, workers: int) -> dict[str, float]:
    """Tasks/s of ``units`` x /bin/true through Parsl's HighThroughputExecutor, ``workers``
    workers on one local block."""
    import parsl  # type: ignore[import-untyped,import-not-found,unused-ignore]
    from parsl.config import Config  # type: ignore[import-untyped,import-not-found,unused-ignore]
    from parsl.executors import HighThroughputExecutor  # type: ignore[import-untyped,import-not-found,unused-ignore]
    from parsl.providers import LocalProvider  # type: ignore[import-untyped,import-not-found,unused-ignore]

    scripts = os.path.dirname(sys.executable)  # Parsl starts interchange.py and its workers by name
    if shutil.which("interchange.py") is None and os.path.exists(os.path.join(scripts, "interchange.py")):
        os.environ["PATH"] = os.pathsep.join([scripts, os.environ.get("PATH", "")])
    run_dir = tempfile.mkdtemp(prefix="pilot-bench-parsl-")
    executor = HighThroughputExecutor(label="bench", max_workers_per_node=workers, address="127.0.0.1",
                                      provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
                                      worker_logdir_root=run_dir)
    t0 = time.perf_counter()
    dfk = parsl.load(Config(executors=[executor], run_dir=run_dir, strategy="none"))
    app: Any = parsl.python_app(run_true, executors=["bench"])
    try:
        app().result()  # the first task waits for the workers to connect: start-up
        startup = time.perf_counter() - t0
        t1 = time.perf_counter()
        futures = [app() for _ in range(units)]
        done = sum(1 for future in futures if future.result() == 0)
        total = time.perf_counter() - t1
    finally:
        dfk.cleanup()
        parsl.clear()
    return {"rate": units / total, "startup": startup, "done": done}
