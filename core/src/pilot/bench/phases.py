"""CPU per unit by phase, as rows: the client's (measured around submit and wait) and the agents'
(from their ``PILOT_AGENT_PROFILE`` JSON)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pilot.agent.profile import LOOP_PHASES, NATIVE, REAP, SANDBOX, SANDBOX_AHEAD, SLOT_OTHER, SPAWN, STAGING

#: the agent's phases in the order printed (what the unit path costs first)
AGENT_PHASES = (LOOP_PHASES["claim"], SANDBOX_AHEAD, SANDBOX, SPAWN, REAP, NATIVE, LOOP_PHASES["flush"], STAGING,
                LOOP_PHASES["handle_events"], LOOP_PHASES["check_canceled"], LOOP_PHASES["claimer_chores"],
                LOOP_PHASES["heartbeat"], LOOP_PHASES["step"], SLOT_OTHER)
UNACCOUNTED = "none of these"

Row = tuple[str, str, str]


def us(seconds: float, units: int) -> str:
    """``seconds`` per unit in µs, for a row."""
    return f"{seconds / max(units, 1) * 1e6:,.1f} µs"


def client_rows(figures: dict[str, Any]) -> list[Row]:
    """The client's and the agents' CPU per unit of one run (no profile needed)."""
    n = int(figures["units"])
    other = figures["cpu_client"] - figures["cpu_submit"] - figures["cpu_wait"] - figures["cpu_placer"]
    return [
        ("client CPU per unit, submit", us(figures["cpu_submit"], n),
         "main thread: validation, encoding, insert (thread_time)"),
        ("client CPU per unit, wait", us(figures["cpu_wait"], n), "main thread, wait() until every unit is final"),
        ("client CPU per unit, placer", us(figures["cpu_placer"], n),
         "placer threads (only when this process places units: a placement policy of its own)"),
        ("client CPU per unit, other threads", us(other, n), "the rest of getrusage over submit and wait"),
        ("client CPU per unit, whole process", us(figures["cpu_client"], n), "getrusage, submit to last unit final"),
        ("agent CPU per unit, whole process", us(figures["cpu_agents"], n),
         "/proc/<pid>/stat utime+stime of the agents and their native spawners, Running to last unit final"),
        ("units' own CPU per unit", us(figures["cpu_units"], n),
         "their processes, reaped by the agents and spawners (cutime+cstime): what the raw benchmark's processes "
         "cost too"),
        ("machine idle during the run", f"{figures['idle']:.1%}",
         "/proc/stat, submit to last unit final: CPU time no process used (slots waiting on the pilot)"),
    ]


def merge(profiles: Sequence[dict[str, Any]]) -> tuple[dict[str, float], float]:
    """Phase CPU seconds summed over the agents' profiles, and their processes' CPU seconds
    after their start-up (a native spawner's own CPU counted as the agent's, as a phase)."""
    phases: dict[str, float] = {}
    for profile in profiles:
        for name, row in profile.get("phases", {}).items():
            phases[name] = phases.get(name, 0.0) + float(row["cpu"])
    spawners = sum(float(p.get("spawner_cpu", 0.0)) for p in profiles)
    if spawners:
        phases[NATIVE] = phases.get(NATIVE, 0.0) + spawners
    return phases, spawners + sum(float(p.get("process_cpu", 0.0)) - float(p.get("start_cpu", 0.0))
                                  for p in profiles)


def agent_rows(profiles: Sequence[dict[str, Any]], units: int) -> list[Row]:
    """The agents' phase table: phase, µs per unit, share of the agents' CPU."""
    if not profiles:
        return [("agent phases", "n/a", "no agent profile was written (PILOT_AGENT_PROFILE)")]
    phases, process = merge(profiles)
    whole = max(process, sum(phases.values()), 1e-9)
    named = [*AGENT_PHASES, *sorted(set(phases) - set(AGENT_PHASES))]
    rows = [(f"agent phase: {name}", us(phases.get(name, 0.0), units), f"{phases.get(name, 0.0) / whole:6.1%}")
            for name in named]
    rest = max(0.0, process - sum(phases.values()))
    rows.append((f"agent phase: {UNACCOUNTED}", us(rest, units),
                 f"{rest / whole:6.1%}  thread hand-offs, the interpreter between timed calls"))
    rows.append(("agent CPU per unit, profiled run", us(process, units),
                 f"{len(profiles)} agent(s): os.times() from start-up done to their end (drain included); "
                 "thread_time per phase"))
    return rows
