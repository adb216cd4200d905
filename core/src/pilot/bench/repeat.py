"""``python -m pilot.bench --runs R``: the bars of the benchmark as medians over R runs.

Each run measures the raw argv spawn rate of the machine right before and right after the
pilot run (their mean is that run's ceiling), so a run's ratio compares figures taken within
seconds of each other; so is the same rate with a sandbox per raw process (a directory and two
files, where the pilots' sandboxes are), which takes the file system's share out of the ratio.
The machine's idle share during each pilot run is printed as a median too. With ``--pilots P``
each run also puts the same units through P pilots of one slot and compares that rate with the
one-pilot rate of the same run.
"""

from __future__ import annotations

import statistics

from pilot.bench.measure import print_rows, run_pilot, sandbox_spawn_rate, spawn_rate


def _spread(values: list[float], fmt: str) -> str:
    return ", ".join(format(v, fmt) for v in values)


def repeated(runs: int, units: int, *, slots: int, raw: int, pilots: int, service_url: str,
             coordination_url: str | None) -> int:
    """Run the benchmark ``runs`` times; print every run's figures and their medians."""
    rates: list[float] = []
    ratios: list[float] = []
    box_ratios: list[float] = []  # to the spawn rate with a sandbox per process: the file system's share out
    many_ratios: list[float] = []
    idle: list[float] = []  # the machine's idle share during each pilot run
    for _ in range(runs):
        before = spawn_rate(["/bin/true"], raw, slots)
        box_before = sandbox_spawn_rate(["/bin/true"], raw, slots)
        figures = run_pilot(units, slots, service_url, coordination_url)
        rate = figures["rate"]
        idle.append(100 * figures["idle"])
        box_after = sandbox_spawn_rate(["/bin/true"], raw, slots)
        after = spawn_rate(["/bin/true"], raw, slots)
        rates.append(rate)
        ratios.append(rate / ((before + after) / 2))
        box_ratios.append(rate / ((box_before + box_after) / 2))
        if pilots:
            many_ratios.append(run_pilot(units, 1, service_url, coordination_url, pilots)["rate"] / rate)
    rows = [
        (f"units per second, {runs} runs", f"{statistics.median(rates):,.0f} /s",
         f"median; runs: {_spread(rates, ',.0f')}"),
        ("ratio to argv spawn rate, median", f"{statistics.median(ratios):.2f}",
         f"bar: >= 0.75, goal 0.8; runs: {_spread(ratios, '.2f')}"),
        ("ratio to argv in a sandbox, median", f"{statistics.median(box_ratios):.2f}",
         f"each raw process in a directory with two files, as a unit; runs: {_spread(box_ratios, '.2f')}"),
        ("machine idle during the runs, median", f"{statistics.median(idle):.1f}%", f"runs: {_spread(idle, '.1f')}"),
    ]
    if pilots:
        rows.append((f"{pilots} pilots of 1 slot to one pilot, median", f"{statistics.median(many_ratios):.2f}",
                     f"bar: >= 0.8; runs: {_spread(many_ratios, '.2f')}"))
    print_rows(rows)
    return 0
