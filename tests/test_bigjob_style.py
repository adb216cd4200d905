"""BigJob-style scripts, run as a user runs them: each script of ``tests/bigjob_scripts`` (this
project's own, written in the styles of BigJob's examples and tutorials) runs as a subprocess
with this Python in a fresh directory, and its output, states and files are checked (issue 10,
contract "Descriptions" and "BigJob compatibility").

Every script prints one ``RESULT {json}`` line at its end; a failing script's output is shown in
the assertion message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pilot.testing.fixtures import PilotEnv

SCRIPTS = Path(__file__).parent / "bigjob_scripts"


class Ran:
    """A finished script: exit code, output and its RESULT."""

    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.output = proc.stdout + proc.stderr
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        self.result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):]) if lines else {}

    def __str__(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout[-4000:]}\n--- stderr\n{self.stderr[-4000:]}"


def run_script(name: str, cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Ran:
    """Run ``tests/bigjob_scripts/<name>`` with this Python in ``cwd``; WORKDIR is ``cwd``."""
    full_env = dict(os.environ)
    full_env.pop("PILOT_COORDINATION_URL", None)
    full_env.update(WORKDIR=str(cwd), PYTHONUNBUFFERED="1")
    full_env.update(env or {})
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, str(SCRIPTS / name), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    return Ran(proc)


def ok(ran: Ran) -> dict[str, Any]:
    """The RESULT of a script that ran to its end."""
    assert ran.returncode == 0, str(ran)
    assert ran.result, f"no RESULT line\n{ran}"
    return ran.result


def files_under(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*.txt") if p.is_file())


# --- descriptions ----------------------------------------------------------------------------

def test_attribute_style_descriptions(pilot_env: PilotEnv) -> None:
    """``pcd = PilotComputeDescription(); pcd.service_url = ...``, environment values that are
    ints; the submitted description is a copy; .id/.url; lists compare with URLs."""
    result = ok(run_script("attribute_style.py", pilot_env.work))
    assert result["is_dict"]
    assert result["done"] == [True] * 4
    assert result["outputs"] == [f"I am task number {i} of A" for i in range(4)]
    assert result["slots"] == 2  # set before create_pilot; the change afterwards did nothing
    assert result["described_slots"] == 2
    assert all(result["ids"]) and all(result["urls"])
    assert all(result["listed"]) and result["pilot_listed"] and result["pilot_computes"]
    assert result["subjob"]


def test_dict_filled_descriptions_numeric_strings_and_bigjob_keys(pilot_env: PilotEnv) -> None:
    """Descriptions filled like dicts, numbers as numeric strings, ``total_core_count`` as the
    slots, ``wall_time_limit`` accepted; ``number_executor_threads`` ignored with one warning;
    a misspelt key and a non-number still raise ``PilotError`` (``.value`` is the message)."""
    ran = run_script("dict_filled.py", pilot_env.work)
    result = ok(ran)
    assert result["done"] == [True, True]
    assert result["outputs"] == ["2 0.5", "2 0.5"]
    assert result["slots"] == [2, 1]
    warnings = [line for line in ran.output.splitlines() if "number_executor_threads" in line]
    assert len(warnings) == 1, "\n".join(warnings) or str(ran)
    assert "ignored" in warnings[0]
    misspelt = result["errors"]["misspelt"]
    assert misspelt is not None and "number_of_proceses" in misspelt and "number_of_processes" in misspelt
    assert result["errors"]["not_a_number"] is not None
    assert "number_of_processes" in result["errors"]["not_a_number"]


# --- compute data service ---------------------------------------------------------------------

def test_compute_data_service_decentral(pilot_env: PilotEnv) -> None:
    """``ComputeDataServiceDecentral()`` without a URL, two labelled pilots, four units placed
    by labels, ``cds.wait()``; the service's BigJob names."""
    result = ok(run_script("decentral.py", pilot_env.work))
    assert result["done"] == [True] * 4
    assert all(len(out) > 0 for out in result["outputs"]), result["outputs"]
    assert result["on_our_pilots"]
    assert result["same_class"] == [True, True]
    assert result["cds_id"] and result["cds_url"] and result["pcs_url"]
    assert result["cds_state_done"], result["cds_state"]
    assert result["cds_details"]
    assert all(result["listed"]) and result["listed_as_set"] == 4


def test_chained_ensemble_environment_from_earlier_units(pilot_env: PilotEnv) -> None:
    """A 'B' task per finished 'A' task, whose environment holds the A ComputeUnit itself
    (``str()`` of it, as BigJob did) and its working directory, and which reads A's output."""
    result = ok(run_script("chained.py", pilot_env.work))
    assert result["done"] == [True] * 6
    assert sorted(result["outputs"]) == sorted(result["expected"])


# --- data ----------------------------------------------------------------------------------

def test_data_replication_by_number_of_replicas(pilot_env: PilotEnv) -> None:
    """A DataUnit with ``number_of_replicas: 2`` (one file named ``ssh://localhost/path``) ends
    up in both PilotData; ``cds.wait()`` returned only once it was stored; lists compare with
    URLs; ``pd.get_du(unknown)`` is None."""
    result = ok(run_script("data.py", pilot_env.work))
    assert result["running_after_wait"], result["state_after_wait"]
    assert result["replicas"] == 2
    assert result["pds_in_list"] == [True, True]
    assert all(result["pd_url_attr"]) and result["du_url_attr"]
    assert result["du_in_pd"] == [True, True]
    assert result["du_in_cds"]
    assert result["get_du"] and result["get_du_unknown_is_none"]
    assert result["get_data_unit"] and result["get_pilot"] and result["cds_pilot_data"]
    assert result["files"] == ["file0.txt", "file1.txt", "file2.txt"]
    assert result["pilot_data_of_du"]
    want = ["file0.txt", "file1.txt", "file2.txt"]
    assert files_under(pilot_env.work / "pilotdata-1") == want
    assert files_under(pilot_env.work / "pilotdata-2") == want
    assert files_under(pilot_env.work / "export") == want


def _reconnect(cwd: Path, env: dict[str, str] | None = None) -> None:
    created = run_script("du_create.py", cwd, env=env)
    assert created.returncode == 0, str(created)
    lines = [line for line in created.stdout.splitlines() if "use the following URL:" in line]
    assert lines, str(created)
    du_url = lines[0].rsplit(" ", 1)[1]
    again = run_script("du_reconnect.py", cwd, du_url, env=env)
    result = ok(again)
    assert result["state"] == "Running"
    assert result["files"] == ["file0.txt", "file1.txt", "file2.txt"]
    assert result["new_pd"] in result["replicas"], result
    assert result["du_in_new_pd"]
    want = ["file0.txt", "file1.txt", "file2.txt"]
    assert files_under(cwd / "pilotdata-reconnect") == want
    assert files_under(cwd / "export") == want


def test_data_unit_reconnected_from_another_process(pilot_env: PilotEnv) -> None:
    """One process stores a DataUnit and prints its URL; another reconnects with that URL alone,
    adds a PilotData (``add_pilot_data``) and exports the files (default store)."""
    _reconnect(pilot_env.work)


# --- redis://PASSWORD@host:port -----------------------------------------------------------------

@pytest.fixture
def bigjob_redis(redis_store_url: str, redis_password: str) -> dict[str, str]:
    """REDIS_PASSWORD and REDIS_HOST (``host:port/db?prefix=...``, the test's own keys) for the
    scripts, which put them together as BigJob did: ``redis://PASSWORD@host:port``."""
    return {"REDIS_PASSWORD": redis_password, "REDIS_HOST": redis_store_url.rpartition("@")[2]}


@pytest.mark.redis
def test_data_unit_reconnected_from_another_process_redis(pilot_env: PilotEnv, bigjob_redis: dict[str, str]) -> None:
    """The reconnect pair on the test redis-server, both with BigJob's URL form for their
    services; the DU URL handed from one to the other carries no password."""
    coord = f"redis://{bigjob_redis['REDIS_PASSWORD']}@{bigjob_redis['REDIS_HOST']}"
    created = run_script("du_create.py", pilot_env.work, env={"COORD": coord})
    assert created.returncode == 0, str(created)
    assert bigjob_redis["REDIS_PASSWORD"] not in created.output
    lines = [line for line in created.stdout.splitlines() if "use the following URL:" in line]
    du_url = lines[0].rsplit(" ", 1)[1]
    assert du_url.startswith("redis://") and "@" not in du_url
    again = run_script("du_reconnect.py", pilot_env.work, du_url, env={"COORD": coord})
    result = ok(again)
    assert result["files"] == ["file0.txt", "file1.txt", "file2.txt"]
    assert result["new_pd"] in result["replicas"]
    assert bigjob_redis["REDIS_PASSWORD"] not in again.output


@pytest.mark.redis
def test_redis_password_url_bigjob_form(pilot_env: PilotEnv, bigjob_redis: dict[str, str]) -> None:
    """``redis://PASSWORD@host:port`` authenticates; a ComputeDataService made without a URL
    takes that store from its first service; the password is in no object URL, detail, output,
    error message, file of the pilot's sandbox, key or value of the store, or process list."""
    import redis

    password = bigjob_redis["REDIS_PASSWORD"]
    ran = run_script("redis_password.py", pilot_env.work, env=bigjob_redis)
    result = ok(ran)
    assert result["done"] == [True] * 3
    assert result["outputs"] == [f"Hello, I am task number {i}" for i in range(3)]
    for url in result["urls"]:
        assert url.startswith("redis://") and "@" not in url, url
    assert password not in ran.output
    assert "wrong-" not in ran.output, "a wrong password shown"
    assert result["wrong"].startswith("PilotError"), result["wrong"]
    assert result["ps"], "no process of the pilot found with ps"
    assert not [line for line in result["ps"] if password in line]
    sandbox = Path(result["sandbox"])
    for path in sandbox.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
    prefix = bigjob_redis["REDIS_HOST"].rpartition("prefix=")[2]
    client = redis.Redis(host="127.0.0.1", port=6390, password=password)
    keys = list(client.scan_iter(match=f"pilot:{prefix}:*", count=10_000))
    assert keys, "nothing stored under the test's prefix"
    for key in keys:
        assert password.encode() not in key
        kind = client.type(key)
        if kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"hash":
            values = [*client.hgetall(key).keys(), *client.hgetall(key).values()]
        elif kind in (b"list",):
            values = client.lrange(key, 0, -1)
        elif kind == b"set":
            values = list(client.smembers(key))
        elif kind == b"zset":
            values = [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
        else:
            values = []
        assert not [v for v in values if password.encode() in v], key
    client.close()
    # the wrong password tried last did not replace the right one: a unit reconnects by URL alone
    from pilot import ComputeUnit

    unit_url = result["urls"][3]
    assert ComputeUnit(cu_url=unit_url).get_state() == "Done"

