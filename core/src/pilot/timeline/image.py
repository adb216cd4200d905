"""A timeline as a PNG or SVG image, with matplotlib (the ``plot`` extra).

Vectorised: every bar is one rectangle of a single ``PolyCollection`` (colours per rectangle),
the staging parts are one ``LineCollection`` each, so 10,000 units draw as fast as a few.
No pyplot: a ``Figure`` of its own on the Agg canvas, so nothing global is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pilot.errors import PilotError
from pilot.timeline.data import Timeline
from pilot.timeline.geometry import STAGING_COLOUR, STATE_COLOURS, Geometry, colour, layout, title

if TYPE_CHECKING:
    from matplotlib.axes import Axes

FORMATS = ("png", "svg")
BAR_FILL = 0.8  # of a slot row's height
EDGED_BARS = 2000  # bars get a white edge (units back to back on a slot stay apart) up to this many


def _import_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PilotError("drawing a timeline image needs matplotlib: pip install 'pilot-core[plot]'") from None


def _draw_bars(ax: Axes, geo: Geometry) -> None:
    import numpy as np
    from matplotlib.collections import LineCollection, PolyCollection

    gap = (1 - BAR_FILL) / 2
    top, bottom = geo.y + gap, geo.y + geo.height - gap
    # (n, 4, 2): the corners of every bar at once
    verts = np.stack([np.column_stack(corner) for corner in (
        (geo.begin, top), (geo.finish, top), (geo.finish, bottom), (geo.begin, bottom))], axis=1)
    few = len(geo.states) <= EDGED_BARS  # with many, white edges would hide the bars
    ax.add_collection(PolyCollection(cast("Sequence[Any]", verts), facecolors=[colour(s) for s in geo.states],
                                     edgecolors="white" if few else "none", linewidths=0.6 if few else 0, zorder=2))
    for segments, style in ((geo.staging_in, (0, (2, 1))), (geo.staging_out, (0, (1, 1)))):
        if len(segments.y):
            lines = np.stack([np.column_stack((segments.begin, segments.y)),
                              np.column_stack((segments.end, segments.y))], axis=1)
            ax.add_collection(LineCollection(cast("Sequence[Any]", lines), colors=STAGING_COLOUR, linewidths=2.5,
                                             linestyles=style, zorder=3))


def _draw_pilots(ax: Axes, geo: Geometry) -> None:
    from matplotlib.patches import Rectangle

    ticks, labels = [], []
    for band in geo.pilots:
        ticks.append(band.first_row + band.rows / 2)
        labels.append(f"{band.label}\n({band.rows} slot{'' if band.rows == 1 else 's'})")
        ax.axhline(band.first_row, color="#4a6fa5", linewidth=0.5, zorder=1)
        if band.started is None:  # never ran (or no record): no lifetime to show
            continue
        start, end = band.started, band.finished if band.finished is not None else geo.end
        ax.add_patch(Rectangle((start, band.first_row), max(end - start, 0.0), band.rows, facecolor="#e8eef7",
                               edgecolor="#4a6fa5", linewidth=0.8, zorder=1))
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.set_ylim(geo.total_rows, 0)


def _legend(ax: Axes, geo: Geometry) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    present = dict.fromkeys(geo.states)
    handles: list[Patch | Line2D] = [Patch(color=c, label=s) for s, c in STATE_COLOURS.items() if s in present]
    handles += [Patch(color=colour(s), label=s) for s in present if s not in STATE_COLOURS]
    handles.append(Patch(facecolor="#e8eef7", edgecolor="#4a6fa5", label="pilot alive"))
    if len(geo.staging_in.y):
        handles.append(Line2D([], [], color=STAGING_COLOUR, linewidth=2.5, linestyle=(0, (2, 1)),
                              label="staging in"))
    if len(geo.staging_out.y):
        handles.append(Line2D([], [], color=STAGING_COLOUR, linewidth=2.5, linestyle=(0, (1, 1)),
                              label="staging out"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def render_image(timeline: Timeline, path: str | Path, *, dpi: int = 110) -> Path:
    """Draw ``timeline`` to ``path`` (``.png`` or ``.svg``): slots over time above, slots busy
    and queue length below; the path written."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise PilotError(f"an image timeline is .png or .svg, not {path.name!r}")
    _import_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    geo = layout(timeline)
    height = min(4.0 + 0.14 * geo.total_rows, 16.0)
    fig = Figure(figsize=(13, height + 2.5), layout="constrained")
    FigureCanvasAgg(fig)
    slots_ax, load_ax = fig.subplots(2, 1, sharex=True, height_ratios=(height, 2.5))
    _draw_pilots(slots_ax, geo)
    _draw_bars(slots_ax, geo)
    slots_ax.set_xlim(0, max(geo.end, 1e-3) * 1.01)
    slots_ax.set_ylabel("pilot slots")
    slots_ax.set_title(title(timeline, geo), fontsize=10, loc="left")
    _legend(slots_ax, geo)
    load_ax.step(geo.busy[0], geo.busy[1], where="post", color="#1f77b4", label="slots busy")
    load_ax.step(geo.queue[0], geo.queue[1], where="post", color="#ff7f0e", label="units queued")
    load_ax.set_xlabel("seconds since the first submission")
    load_ax.set_ylabel("count")
    load_ax.set_ylim(bottom=0)
    load_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    load_ax.grid(True, linewidth=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=fmt, dpi=dpi)
    return path
