"""Benchmark of the Globus backend against the FAKE Globus services of ``pilot_globus.testing``
(the service cannot be reached from the test machines): how many Transfer API calls and how
long it takes to store, replicate and fetch a DataUnit of N files.

    python -m pilot_globus.bench -n 1000        # or: tox -e bench-globus

Times measure this machine and the fake (files copied between local directories), not a WAN;
the call counts are what the real service would see.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

from pilot_globus.testing import FakeGlobus


def _files(directory: Path, count: int, size: int) -> list[str]:
    directory.mkdir(parents=True)
    paths = []
    for n in range(count):
        path = directory / f"f{n:06d}.dat"
        path.write_bytes(os.urandom(size))
        paths.append(str(path))
    return paths


def _site(root: Path, fake: FakeGlobus, local: str) -> None:
    a, b = (fake.add_collection(_mkdir(root / name), display_name=name) for name in ("a", "b"))
    here_root = _mkdir(root / "here")
    here = fake.add_collection(here_root, display_name="here")
    config = root / "site.toml"
    config.write_text(f'[globus]\n{local}\n[globus.collections.a]\nid = "{a}"\n[globus.collections.b]\nid = "{b}"\n'
                      f'[globus.collections.here]\nid = "{here}"\nlocal_path = "{here_root}"\n')
    client_id, secret = fake.register_confidential_client()
    os.environ.update(fake.environ())
    os.environ.update({"PILOT_SITE_CONFIG": str(config), "PILOT_GLOBUS_CLIENT_ID": client_id,
                       "PILOT_GLOBUS_CLIENT_SECRET": secret, "PILOT_HOME": str(root / "pilot-home")})


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _report(what: str, fake: FakeGlobus, started: float, count: int, tasks_before: int) -> None:
    elapsed = time.perf_counter() - started
    services = Counter(service for service, _, _ in fake.calls)
    tasks = len(fake.tasks) - tasks_before
    print(f"{what:<52} {elapsed:7.2f} s  {count / elapsed:8.0f} files/s  Transfer API calls {services['transfer']:5d}"
          f"  tasks {tasks:3d}  HTTPS requests {services['https']:5d}  Auth calls {services['auth']:3d}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print one line per operation."""
    parser = argparse.ArgumentParser(prog="python -m pilot_globus.bench")
    parser.add_argument("-n", type=int, default=1000, help="files in the DataUnit (default 1000)")
    parser.add_argument("--size", type=int, default=4096, help="bytes per file (default 4096)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pilot-globus-bench-") as tmp, FakeGlobus(Path(tmp) / "fake") as fake:
        root = Path(tmp)
        _site(root, fake, 'local_collection = "here"')
        from pilot import PilotDataService, State

        sources = _files(root / "src", args.n, args.size)
        staged = _files(root / "here" / "staged", args.n, args.size)
        pds = PilotDataService()
        print(f"DataUnit of {args.n} files of {args.size} bytes; FAKE Globus services on loopback (TLS)")
        for what, files, place in (("store from this host over HTTPS (a, put)", sources, "globus://a/pd"),
                                   ("store through the local collection (one task)", staged, "globus://a/pd2")):
            pd = pds.create_pilot({"service_url": place})
            fake.reset_calls()
            before, started = len(fake.tasks), time.perf_counter()
            du = pd.submit_data_unit({"file_urls": files})
            if du.wait(timeout=3600) != State.Running:
                raise SystemExit(f"storing failed: {du.get_details()['reason']}")
            _report(what, fake, started, args.n, before)
        target = pds.create_pilot({"service_url": "globus://b/replica"})
        fake.reset_calls()
        before, started = len(fake.tasks), time.perf_counter()
        du.add_pilot_data(target)
        du.wait(timeout=3600)
        if du.get_details()["replicas"].get(target.id) != "Running":
            raise SystemExit(f"replication failed: {du.get_details()['replica_reasons']}")
        _report("replicate Globus -> Globus (a -> b, one task)", fake, started, args.n, before)
        fake.reset_calls()
        before, started = len(fake.tasks), time.perf_counter()
        exported = du.export(root / "back")
        _report("fetch to this host over HTTPS (export)", fake, started, len(exported), before)
        pds.cancel()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
