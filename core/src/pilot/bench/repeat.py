"""``python -m pilot.bench --runs R``: the bars of the benchmark as medians over R runs.

Each run measures the raw argv spawn rate of the machine right before and right after the
pilot run (their mean is that run's ceiling), so a run's ratio compares figures taken within
seconds of each other; with ``--pilots P`` each run also puts the same units through P pilots
of one slot and compares that rate with the one-pilot rate of the same run.
"""

from __future__ import annotations

import statistics

from pilot.bench.measure import print_rows, run_pilot, spawn_rate


def _spread(values: list[float], fmt: str) -> str:
    return ", ".join(format(v, fmt) for v in values)


def repeated(runs: int, units: int, *, slots: int, raw: int, pilots: int, service_url: str,
             coordination_url: str | None) -> int:
    """Run the benchmark ``runs`` times; print every run's figures and their medians."""
    rates: list[float] = []
    ratios: list[float] = []
    many_ratios: list[float] = []
    for _ in range(runs):
        before = spawn_rate(["/bin/true"], raw, slots)
        rate = run_pilot(units, slots, service_url, coordination_url)["rate"]
        after = spawn_rate(["/bin/true"], raw, slots)
        rates.append(rate)
        ratios.append(rate / ((before + after) / 2))
        if pilots:
            many_ratios.append(run_pilot(units, 1, service_url, coordination_url, pilots)["rate"] / rate)
    rows = [
        (f"units per second, {runs} runs", f"{statistics.median(rates):,.0f} /s",
         f"median; runs: {_spread(rates, ',.0f')}"),
        ("ratio to argv spawn rate, median", f"{statistics.median(ratios):.2f}",
         f"bar: >= 0.75, goal 0.8; runs: {_spread(ratios, '.2f')}"),
    ]
    if pilots:
        rows.append((f"{pilots} pilots of 1 slot to one pilot, median", f"{statistics.median(many_ratios):.2f}",
                     f"bar: >= 0.8; runs: {_spread(many_ratios, '.2f')}"))
    print_rows(rows)
    return 0
