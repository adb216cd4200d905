"""A timeline as one self-contained interactive HTML page, with plotly (the ``plot`` extra).

One horizontal bar trace per unit state (never one per unit): each unit is one SVG bar
(``g.trace.bars g.point``), and hovering it shows the unit, its command, exit code, reason and
phases. The staging parts are line traces over the bars; the lower panel shows slots busy and
units queued. plotly.js is embedded in the page (no network needed to open it).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pilot.errors import PilotError
from pilot.timeline.data import Timeline
from pilot.timeline.geometry import STAGING_COLOUR, Geometry, Segments, colour, layout, title

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

HOVER = ("<b>%{customdata[0]}</b> (%{customdata[1]})<br>command: %{customdata[2]}<br>"
         "exit code: %{customdata[3]}<br>reason: %{customdata[4]}<br>pilot: %{customdata[5]}, slot "
         "%{customdata[6]}, host %{customdata[7]}<br>%{customdata[8]}<extra></extra>")
EDGED_BARS = 2000  # bars get a white edge up to this many
MAX_TEXT = 300  # characters of a command or reason shown on hover


def _text(value: Any) -> str:
    """A value as hover text: shortened, and HTML-escaped (plotly renders hover text as markup)."""
    text = "-" if value is None else str(value)
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + "..."
    return html.escape(text)


def _phases(row: dict[str, Any]) -> str:
    """Waited, staged in, ran, staged out: seconds of each phase the unit went through."""
    def span(a: float | None, b: float | None) -> str | None:
        return None if a is None or b is None else f"{max(b - a, 0.0):.3f} s"

    begin = row["staging_in"] if row["staging_in"] is not None else row["started"]
    parts = [("queued", span(row["submitted"], begin)),
             ("staging in", span(row["staging_in"], row["started"]) if row["staging_in"] is not None else None),
             ("running", span(row["started"], row["staging_out"] or row["finished"])),
             ("staging out", span(row["staging_out"], row["finished"]))]
    return ", ".join(f"{name} {value}" for name, value in parts if value is not None)


def _customdata(row: dict[str, Any]) -> list[str]:
    return [_text(row["id"]), _text(row["state"]), _text(row["command"]), _text(row["exit_code"]),
            _text(row["reason"]), _text(row["pilot"]), _text(row["slot"]), _text(row["host"]),
            _text(_phases(row))]


def _line_xy(segments: Segments) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """x and y of one line trace drawing every segment (NaN between segments)."""
    import numpy as np

    n = len(segments.y)
    x = np.full(3 * n, np.nan)
    y = np.full(3 * n, np.nan)
    x[0::3], x[1::3] = segments.begin, segments.end
    y[0::3] = y[1::3] = segments.y
    return x, y


def _figure(timeline: Timeline, geo: Geometry) -> Any:
    import numpy as np
    import plotly.graph_objects as go  # type: ignore[import-untyped,import-not-found,unused-ignore]
    from plotly.subplots import make_subplots  # type: ignore[import-untyped,import-not-found,unused-ignore]

    slot_height = min(max(8.0, 700.0 / geo.total_rows), 24.0)
    top_px = max(300.0, slot_height * geo.total_rows)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        row_heights=[top_px, 220.0])
    for band in geo.pilots:
        if band.started is None:  # never ran (or no record): no lifetime to show
            continue
        start, end = band.started, band.finished if band.finished is not None else geo.end
        fig.add_shape(type="rect", x0=start, x1=max(end, start), y0=band.first_row, y1=band.first_row + band.rows,
                      fillcolor="#e8eef7", line={"color": "#4a6fa5", "width": 1}, layer="below", row=1, col=1)
    states = np.asarray(geo.states, dtype=object)
    few = len(geo.states) <= EDGED_BARS
    for state in dict.fromkeys(geo.states):
        chosen = np.flatnonzero(states == state)
        fig.add_trace(go.Bar(
            name=state, orientation="h", base=geo.begin[chosen], x=geo.finish[chosen] - geo.begin[chosen],
            y=geo.y[chosen] + geo.height[chosen] / 2, width=geo.height[chosen] * 0.8,
            marker={"color": colour(state), "line": {"width": 0.5 if few else 0, "color": "white"}},
            customdata=[_customdata(geo.bars[i]) for i in chosen], hovertemplate=HOVER,
        ), row=1, col=1)
    for name, segments, dash in (("staging in", geo.staging_in, "dash"), ("staging out", geo.staging_out, "dot")):
        if len(segments.y):
            x, y = _line_xy(segments)
            fig.add_trace(go.Scatter(name=name, x=x, y=y, mode="lines", hoverinfo="skip",
                                     line={"color": STAGING_COLOUR, "width": 3, "dash": dash}), row=1, col=1)
    for name, (t, value), line_colour in (("slots busy", geo.busy, "#1f77b4"), ("units queued", geo.queue, "#ff7f0e")):
        fig.add_trace(go.Scatter(name=name, x=t, y=value, mode="lines", line={"shape": "hv", "color": line_colour}),
                      row=2, col=1)
    fig.update_yaxes(autorange=False, range=[geo.total_rows, 0], tickmode="array",
                     tickvals=[b.first_row + b.rows / 2 for b in geo.pilots],
                     ticktext=[f"{b.label} ({b.rows} slot{'' if b.rows == 1 else 's'})" for b in geo.pilots],
                     title_text="pilot slots",
                     row=1, col=1)
    fig.update_yaxes(title_text="count", rangemode="tozero", row=2, col=1)
    fig.update_xaxes(title_text="seconds since the first submission", row=2, col=1)
    fig.update_layout(title={"text": _text(title(timeline, geo)), "x": 0.01}, barmode="overlay",
                      height=int(top_px + 220 + 160), hovermode="closest", template="plotly_white",
                      legend={"orientation": "v", "x": 1.01, "y": 1.0})
    return fig


def render_html(timeline: Timeline, path: str | Path) -> Path:
    """Write ``timeline`` as a self-contained interactive page to ``path``; the path written."""
    try:
        import plotly  # type: ignore[import-untyped,import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        raise PilotError("drawing a timeline page needs plotly: pip install 'pilot-core[plot]'") from None
    path = Path(path)
    figure = _figure(timeline, layout(timeline))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.write_html(path, include_plotlyjs=True, full_html=True, config={"responsive": True},
                      div_id="pilot-timeline")
    return path
