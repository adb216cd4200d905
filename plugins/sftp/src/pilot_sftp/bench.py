"""The data benchmark (``tox -e bench-data``, ``python -m pilot_sftp.bench``): a 200 MB file
put and got through the SFTP backend on loopback beside ``scp`` of the same file in the same run
(and paramiko's SFTP client when installed), then 1,000 small files staged into units from an
SFTP PilotData. Needs the test sshd (``bash tests/infra/start-sshd.sh``)."""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

SSHD = Path(os.environ.get("SSHD_DIR", "/tmp/ci-sshd"))  # noqa: S108 - where start-sshd.sh puts its keys


def _best(func: Callable[[], object], runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def _scp_args(port: int) -> list[str]:
    return ["scp", "-q", "-P", str(port), "-i", str(SSHD / "client_key"), "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={SSHD / 'known_hosts'}"]


def bulk(size_mb: int, runs: int, user: str, port: int) -> list[tuple[str, float, float, float, float]]:
    """Rows (client, put best s, put median s, get best s, get median s)."""
    from pilot_sftp.backend import SFTPBackend

    rows = []
    with tempfile.TemporaryDirectory(prefix="pilot-bench-") as tmp:
        src = Path(tmp, "blob")
        with open(src, "wb") as out:
            for _ in range(size_mb):
                out.write(os.urandom(1_000_000))
        digest = hashlib.md5(src.read_bytes()).hexdigest()  # noqa: S324 - a content check, not security
        remote = f"/tmp/pilot-bench-{uuid.uuid4().hex}"  # noqa: S108 - a unique path on the test server
        back = Path(tmp, "back")

        def check() -> None:
            assert hashlib.md5(back.read_bytes()).hexdigest() == digest, "corrupt transfer"  # noqa: S324
            back.unlink()

        scp = _scp_args(port)
        put = _best(lambda: subprocess.run([*scp, str(src), f"{user}@127.0.0.1:{remote}"], check=True), runs)
        get = _best(lambda: subprocess.run([*scp, f"{user}@127.0.0.1:{remote}", str(back)], check=True), runs)
        check()
        rows.append(("scp (OpenSSH)", *put, *get))

        backend = SFTPBackend()
        options = {"known_hosts": str(SSHD / "known_hosts"), "identity_file": str(SSHD / "client_key")}
        url = f"sftp://{user}@127.0.0.1:{port}{remote}.sftp"
        backend.create_place(f"sftp://{user}@127.0.0.1:{port}/tmp", options)  # noqa: S108 - connect before timing
        put = _best(lambda: backend.put(str(src), url, options), runs)
        get = _best(lambda: backend.get(url, str(back), options), runs)
        check()
        backend.remove(url, options)
        backend.close()
        rows.append(("pilot-sftp (asyncssh)", *put, *get))

        try:
            import paramiko  # type: ignore[import-untyped]
        except ImportError:
            paramiko = None
        if paramiko is not None:
            client = paramiko.SSHClient()
            client.load_host_keys(str(SSHD / "known_hosts"))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect("127.0.0.1", port=port, username=user, key_filename=str(SSHD / "client_key"),
                           look_for_keys=False, allow_agent=False)
            sftp = client.open_sftp()
            put = _best(lambda: sftp.put(str(src), remote + ".pm"), runs)
            get = _best(lambda: sftp.get(remote + ".pm", str(back)), runs)
            check()
            sftp.remove(remote + ".pm")
            client.close()
            rows.append(("paramiko SFTPClient", *put, *get))
        subprocess.run([*_ssh_args(port), f"{user}@127.0.0.1", "rm", "-f", remote], check=False)
    return rows


def _ssh_args(port: int) -> list[str]:
    return ["ssh", "-p", str(port), "-i", str(SSHD / "client_key"), "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={SSHD / 'known_hosts'}"]


def staging(files: int, units: int, user: str, port: int) -> dict[str, Any]:
    """Stage ``files`` 4 KB files from an SFTP PilotData into ``units`` units (one DU each)."""
    from pilot import ComputeDataService, PilotComputeService, PilotDataService, State

    with tempfile.TemporaryDirectory(prefix="pilot-bench-") as tmp:
        os.environ["PILOT_HOME"] = str(Path(tmp, "home"))
        src = Path(tmp, "small")
        src.mkdir()
        per_unit = files // units
        pds = PilotDataService()
        remote_dir = f"/tmp/pilot-bench-{uuid.uuid4().hex}"  # noqa: S108 - a unique path on the test server
        pd = pds.create_pilot({"service_url": f"sftp://{user}@127.0.0.1:{port}{remote_dir}",
                               "extra": {"known_hosts": str(SSHD / "known_hosts"),
                                         "identity_file": str(SSHD / "client_key")}})
        dus = []
        for u in range(units):
            names = []
            for n in range(per_unit):
                path = src / f"u{u}-f{n:04d}.dat"
                path.write_bytes(os.urandom(4096))
                names.append(str(path))
            dus.append(pd.submit_data_unit({"file_urls": names}))
        t0 = time.perf_counter()
        for du in dus:
            du.wait()
        store_s = time.perf_counter() - t0
        pcs = PilotComputeService()
        pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 2,
                          "working_directory": str(Path(tmp, "work"))})
        cds = ComputeDataService()
        cds.add_pilot_compute_service(pcs)
        t0 = time.perf_counter()
        cus = cds.submit_compute_units([{"executable": "/bin/true", "input_data": [du.get_url()]} for du in dus])
        cds.wait()
        total = time.perf_counter() - t0
        ok = sum(1 for cu in cus if cu.get_state() == State.Done)
        staged = sum(len(list(Path(cu.get_local_working_directory() or ".").glob("*.dat"))) for cu in cus)
        pcs.cancel()
        pd.cancel(remove_data=True)
        return {"files": files, "units": units, "done": ok, "staged": staged, "store_s": store_s, "stage_s": total}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(prog="python -m pilot_sftp.bench", description=__doc__)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--units", type=int, default=10)
    parser.add_argument("--user", default=os.environ.get("SSHD_USER", "ciuser"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SSHD_PORT", "2222")))
    args = parser.parse_args(argv)
    if not (SSHD / "client_key").exists():
        print(f"no test sshd under {SSHD}: run bash tests/infra/start-sshd.sh", file=sys.stderr)
        return 2
    rows = bulk(args.size_mb, args.runs, args.user, args.port)
    mb = args.size_mb
    print(f"{mb} MB file over loopback, best (median) of {args.runs}")
    print(f"{'client':24} {'put MB/s':>18} {'get MB/s':>18}")
    for name, pb, pm, gb, gm in rows:
        print(f"{name:24} {mb / pb:8.0f} ({mb / pm:5.0f})  {mb / gb:8.0f} ({mb / gm:5.0f})")
    scp, ours = rows[0], rows[1]
    print(f"pilot-sftp / scp: put {scp[1] / ours[1]:.2f}, get {scp[3] / ours[3]:.2f} (bar: >= 0.7 both ways)")
    result = staging(args.files, args.units, args.user, args.port)
    print(f"staging {result['files']} x 4 KB files from an SFTP PilotData into {result['units']} units: "
          f"{result['staged']} staged, {result['done']} units Done")
    print(f"  storing them (client, put):         {result['files'] / result['store_s']:8.0f} files/s")
    print(f"  submit to all units Done (stage-in): {result['files'] / result['stage_s']:8.0f} files/s "
          f"({result['stage_s']:.2f} s, one SSH connection per agent)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
