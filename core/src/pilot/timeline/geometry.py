"""What both renderers draw, as numpy arrays: one bar per started unit (its slots over time),
the staging parts of the bars, the pilots' lifetimes and the busy-slots and queue-length steps.
Times are seconds since the first submission (``t0``)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from pilot.timeline.data import Row, Timeline, unit_begin

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Floats = npt.NDArray[np.float64]

#: Bar colours by the unit's state (final states, then the live ones).
STATE_COLOURS = {
    "Done": "#2ca02c", "Failed": "#d62728", "Canceled": "#7f7f7f",
    "Running": "#1f77b4", "Staging": "#17becf", "Pending": "#bcbd22", "New": "#bcbd22",
}
OTHER_COLOUR = "#9467bd"
STAGING_COLOUR = "#000000"


@dataclasses.dataclass(frozen=True)
class Segments:
    """Horizontal segments: row position ``y``, from ``begin`` to ``end``."""

    y: Floats
    begin: Floats
    end: Floats


@dataclasses.dataclass(frozen=True)
class PilotBand:
    """A pilot's block of slot rows and when it was alive (``None``: not known)."""

    label: str
    first_row: int
    rows: int
    started: float | None
    finished: float | None


@dataclasses.dataclass(frozen=True)
class Geometry:
    """A timeline laid out for drawing."""

    t0: float
    end: float
    bars: list[Row]          # the rows drawn, in ``y``'s order
    y: Floats                # the bar's top row (bars span ``height`` rows)
    height: Floats
    begin: Floats
    finish: Floats
    states: list[str]
    staging_in: Segments
    staging_out: Segments
    pilots: list[PilotBand]
    busy: tuple[Floats, Floats]   # (time, slots busy from then on)
    queue: tuple[Floats, Floats]  # (time, units queued from then on)
    total_rows: int


def _steps(times: list[float], deltas: list[float]) -> tuple[Floats, Floats]:
    """A step function from changes at ``times``: (times sorted, running sum after each)."""
    import numpy as np

    if not times:
        return np.zeros(1), np.zeros(1)
    t = np.asarray(times, dtype=float)
    d = np.asarray(deltas, dtype=float)
    order = np.argsort(t, kind="stable")
    return t[order], np.cumsum(d[order])


def _segments(y: list[float], begin: list[float], end: list[float]) -> Segments:
    import numpy as np

    return Segments(np.asarray(y, dtype=float), np.asarray(begin, dtype=float), np.asarray(end, dtype=float))


def layout(timeline: Timeline) -> Geometry:
    """Lay a timeline out (vectorised where it counts; one pass over the rows)."""
    import numpy as np

    times = [t for r in timeline.rows for t in (r["submitted"], unit_begin(r), r["finished"]) if t is not None]
    times += [t for p in timeline.pilots for t in (p.started, p.finished) if t is not None]
    t0 = min(times) if times else timeline.now
    now = timeline.now - t0
    first_row = {p.id: p.first_row for p in timeline.pilots}
    bars: list[Row] = []
    y: list[float] = []
    height: list[float] = []
    begin: list[float] = []
    finish: list[float] = []
    stage_in: tuple[list[float], list[float], list[float]] = ([], [], [])
    stage_out: tuple[list[float], list[float], list[float]] = ([], [], [])
    busy_t: list[float] = []
    busy_d: list[float] = []
    queue_t: list[float] = []
    queue_d: list[float] = []
    for row in timeline.rows:
        start = unit_begin(row)
        end = row["finished"] - t0 if row["finished"] is not None else now
        if row["submitted"] is not None:
            queue_t.append(row["submitted"] - t0)
            queue_d.append(1.0)
            if start is not None or row["finished"] is not None:
                queue_t.append(start - t0 if start is not None else end)
                queue_d.append(-1.0)
        if start is None or row["slot"] is None:
            continue
        start -= t0
        end = max(end, start)
        top = first_row.get(row["pilot"], 0) + row["slot"]
        bars.append(row)
        y.append(top)
        height.append(row["slots"])
        begin.append(start)
        finish.append(end)
        busy_t += (start, end)
        busy_d += (row["slots"], -row["slots"])
        if row["staging_in"] is not None:
            ran = row["started"] - t0 if row["started"] is not None else end
            stage_in[0].append(top + row["slots"] / 2)
            stage_in[1].append(start)
            stage_in[2].append(min(max(ran, start), end))
        if row["staging_out"] is not None:
            stage_out[0].append(top + row["slots"] / 2)
            stage_out[1].append(min(max(row["staging_out"] - t0, start), end))
            stage_out[2].append(end)
    ends = [*finish, *queue_t, *(p.finished - t0 for p in timeline.pilots if p.finished is not None)]
    if any(r["finished"] is None for r in timeline.rows) or any(
            p.started is not None and p.finished is None for p in timeline.pilots):
        ends.append(now)  # something is still going on: the picture runs until it was read
    pilots = [PilotBand(p.id if len(p.id) <= 14 else p.id[:14], p.first_row, p.rows,
                        None if p.started is None else p.started - t0,
                        None if p.finished is None else p.finished - t0) for p in timeline.pilots]
    return Geometry(
        t0=t0, end=max(ends, default=0.0), bars=bars, y=np.asarray(y, dtype=float),
        height=np.asarray(height, dtype=float), begin=np.asarray(begin, dtype=float),
        finish=np.asarray(finish, dtype=float), states=[r["state"] for r in bars],
        staging_in=_segments(*stage_in), staging_out=_segments(*stage_out), pilots=pilots,
        busy=_steps(busy_t, busy_d), queue=_steps(queue_t, queue_d), total_rows=max(1, timeline.slot_rows),
    )


def colour(state: str) -> str:
    """The bar colour of a state."""
    return STATE_COLOURS.get(state, OTHER_COLOUR)


def title(timeline: Timeline, geometry: Geometry) -> str:
    """The figure's title: what, how many units, from when."""
    import datetime

    when = datetime.datetime.fromtimestamp(geometry.t0).strftime("%Y-%m-%d %H:%M:%S")
    return f"{timeline.title}: {len(timeline.rows)} units on {len(timeline.pilots)} pilots, from {when}"
