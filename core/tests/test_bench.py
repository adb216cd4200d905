"""The benchmark's output (phase table, CPU per unit, peak memory), the agent's opt-in profile
(``PILOT_AGENT_PROFILE``) and ``--peers`` where Dask and Parsl are missing."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pilot import PilotComputeService, State
from pilot.agent.native import SPAWNER_ENV
from pilot.agent.profile import PROFILE_ENV
from pilot.bench.phases import merge

from helpers import fork_pilot, wait_for


def _bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pilot.bench", *args], capture_output=True, text=True,
                          check=False, timeout=180, env=env)


def test_bench_prints_cpu_by_phase_and_peak_memory() -> None:
    done = _bench("-n", "200", "--raw", "200")
    assert done.returncode == 0, done.stderr
    names = [line.split("  ")[0] for line in done.stdout.splitlines()]
    for row in ("raw spawn rate, argv", "raw spawn rate, argv in a sandbox", "ratio to argv spawn rate",
                "ratio to argv in a sandbox",
                "client CPU per unit, submit", "client CPU per unit, wait", "client CPU per unit, placer",
                "client CPU per unit, whole process", "agent CPU per unit, whole process",
                "units' own CPU per unit", "machine idle during the run",
                "units per second, agent profile on", "agent phase: claiming from the store",
                "agent phase: sandboxes made ahead", "agent phase: sandbox and files", "agent phase: spawning",
                "agent phase: waiting and reaping", "agent phase: native spawner process",
                "agent phase: store writes of state", "agent phase: staging", "agent phase: none of these",
                "agent CPU per unit, profiled run", "client peak memory", "agent peak memory"):
        assert row in names, f"{row!r} missing from:\n{done.stdout}"
    assert "n/a" not in done.stdout  # the profiled run's agent wrote its profile
    rates = {line.split("  ")[0]: float(re.search(r"\s([\d,]+) /s", line)[1].replace(",", ""))  # type: ignore[index]
             for line in done.stdout.splitlines() if line.startswith("raw spawn rate")}
    assert rates["raw spawn rate, argv"] > 0 and rates["raw spawn rate, argv in a sandbox"] > 0
    assert done.stdout.count("200 Done") == 2  # the plain run and the profiled one
    row = {line.split("  ")[0]: line for line in done.stdout.splitlines()}
    units_us = float(re.search(r"([\d,.]+) µs", row["units' own CPU per unit"])[1].replace(",", ""))  # type: ignore[index]
    assert units_us > 0  # 200 processes ran and were reaped by the agent
    idle = float(re.search(r"([\d.]+)%", row["machine idle during the run"])[1])  # type: ignore[index]
    assert 0 <= idle <= 100


def test_agent_profile_is_written_with_its_phases(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    pilot = fork_pilot(PilotComputeService(), slots=2, environment={PROFILE_ENV: str(path), SPAWNER_ENV: "0"})
    units = [pilot.submit_compute_unit({"executable": "/bin/true"}) for _ in range(8)]
    pilot.wait(timeout=60)
    assert {u.get_state() for u in units} == {State.Done}
    pilot.cancel()
    wait_for(lambda: path.exists() and json.loads(path.read_text())["final"], 15, "the agent's final profile")
    profile = json.loads(path.read_text())
    phases = profile["phases"]
    for phase in ("sandbox and files", "spawning", "waiting and reaping"):
        assert phases[phase]["count"] == 8, phase
    assert 1 <= phases["sandboxes made ahead"]["count"] <= 8  # plain units: made as they were claimed
    for phase in ("claiming from the store", "store writes of state", "loop, other"):
        assert phases[phase]["count"] >= 1, phase
    assert all(row["cpu"] >= 0 and row["wall"] >= 0 for row in phases.values())
    assert profile["process_cpu"] >= profile["start_cpu"] > 0
    assert sum(row["cpu"] for row in phases.values()) <= profile["process_cpu"]
    assert "staging" not in phases  # no unit had data to stage
    assert "spawner_cpu" not in profile  # no native spawner: slot threads started the units


def test_agent_profile_counts_the_native_spawner_s_own_cpu(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    pilot = fork_pilot(PilotComputeService(), slots=2, environment={PROFILE_ENV: str(path)})
    units = [pilot.submit_compute_unit({"executable": "/bin/true"}) for _ in range(20)]
    pilot.wait(timeout=60)
    assert {u.get_state() for u in units} == {State.Done}
    pilot.cancel()
    wait_for(lambda: path.exists() and json.loads(path.read_text())["final"], 15, "the agent's final profile")
    profile = json.loads(path.read_text())
    assert "spawning" not in profile["phases"]  # the spawner started them, not slot threads
    assert profile["spawner_cpu"] > 0
    phases, process = merge([profile])
    assert phases["native spawner process"] == profile["spawner_cpu"]
    assert process == pytest.approx(profile["process_cpu"] - profile["start_cpu"] + profile["spawner_cpu"])


@pytest.mark.skipif(importlib.util.find_spec("distributed") is not None and importlib.util.find_spec("parsl")
                    is not None, reason="Dask and Parsl are installed here")
def test_peers_without_dask_and_parsl_says_how_to_get_them() -> None:
    done = _bench("--peers", "-n", "10", "--raw", "10")
    assert done.returncode == 2
    assert "install with tox -e bench" in done.stderr
    assert done.stdout == ""  # nothing ran first


def test_submit_only_prints_the_submission_figures(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pilot.bench", "-n", "300", "--submit-only"], capture_output=True,
                          text=True, timeout=120, check=True, env={**os.environ, "PILOT_HOME": str(tmp_path / "home")})
    assert "units submitted from a generator" in done.stdout and "300" in done.stdout
    assert "client peak memory" in done.stdout


def test_bench_runs_prints_medians_of_every_bar_and_leaves_nothing_behind(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PILOT_HOME"}
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    done = _bench("-n", "100", "--raw", "100", "--runs", "3", "--pilots", "2", env={**env, "TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr
    assert list(scratch.iterdir()) == []  # its store and the pilots' sandboxes are gone
    rows = {line.split("  ")[0]: line for line in done.stdout.splitlines()}
    assert set(rows) >= {"units per second, 3 runs", "ratio to argv spawn rate, median",
                         "ratio to argv in a sandbox, median", "2 pilots of 1 slot to one pilot, median",
                         "machine idle during the runs, median"}
    for line in rows.values():  # each row lists its three runs after the median
        assert len(line.split("runs: ")[1].split(", ")) == 3
