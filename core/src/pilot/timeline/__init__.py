"""The timeline of a run: one row per unit (its pilot, slot, state, command and when it was
submitted, staged in, started, staged out and finished), drawn as slots over time.

``load_timeline(url)`` reads the rows of a ComputeDataService, a PilotComputeService or a pilot;
``ComputeDataService.get_timeline()`` (and the pilot service's and pilot's) return the rows
alone. ``render(timeline, path)`` draws a PNG or SVG (matplotlib) or an interactive HTML page
(plotly): both from the optional extra ``pilot-core[plot]``; ``pilot timeline URL -o FILE``.
"""

from __future__ import annotations

from pathlib import Path

from pilot.errors import PilotError
from pilot.timeline.data import ROW_KEYS, PilotSpan, Row, Timeline, build_timeline, load_timeline, timeline_of

__all__ = ["FORMATS", "ROW_KEYS", "PilotSpan", "Row", "Timeline", "build_timeline", "load_timeline", "render",
           "timeline_of"]

FORMATS = ("png", "svg", "html")


def render(timeline: Timeline, path: str | Path) -> Path:
    """Draw ``timeline`` to ``path``, the format from its suffix (``.png``, ``.svg``, ``.html``)."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt == "html":
        from pilot.timeline.html import render_html

        return render_html(timeline, path)
    if fmt in ("png", "svg"):
        from pilot.timeline.image import render_image

        return render_image(timeline, path)
    raise PilotError(f"a timeline is drawn to .png, .svg or .html, not {path.name!r}")
