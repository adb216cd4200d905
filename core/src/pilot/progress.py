"""The progress display of ``wait()``: units by state, units per second and the time left, drawn
with ``rich`` on the terminal while a service, a pilot or a PilotComputeService is waited on.

It is shown when standard error is a terminal, unless ``CI`` is set or ``PILOT_PROGRESS=0``
(``PILOT_PROGRESS=1`` shows it anywhere); ``wait(progress=True|False)`` decides for one call. It
costs the run nothing measurable: a thread of its own asks the store for the counts by state
(``count_units``, one query) twice a second, or less often when that query is slow, and never
touches a unit.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping

from pilot.errors import PilotError
from pilot.states import FINAL_STATES, State

PROGRESS_ENV = "PILOT_PROGRESS"
INTERVAL = 0.5
#: States in the order they are shown.
ORDER = (State.New, State.Pending, State.Staging, State.Running, State.Done, State.Failed, State.Canceled)


def wanted(progress: bool | None) -> bool:
    """Whether to show the display: ``progress`` when given, else the environment decides."""
    if progress is not None:
        if not isinstance(progress, bool):
            raise PilotError(f"progress must be True, False or None, got {progress!r}", key="progress")
        return progress
    setting = os.environ.get(PROGRESS_ENV, "").strip()
    if setting in ("0", "1"):
        return setting == "1"
    if setting:
        raise PilotError(f"{PROGRESS_ENV} must be 0 or 1, got {setting!r}")
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def summary(counts: Mapping[str, int]) -> str:
    """``Running 2 · Done 40 · Failed 1`` for the states that have units."""
    known = [s.value for s in ORDER]
    parts = [f"{state} {counts[state]}" for state in known if counts.get(state)]
    parts += [f"{state} {n}" for state, n in sorted(counts.items()) if state not in known and n]
    return " · ".join(parts) or "no units"


class _Display:
    """A rich Progress fed from ``counts()`` by a thread of its own."""

    def __init__(self, counts: Callable[[], Mapping[str, int]], title: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.counts = counts
        self.stop_event = threading.Event()
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                 TextColumn("{task.fields[states]}"),
                                 console=Console(stderr=True), auto_refresh=False, transient=False)
        self.task = self.progress.add_task(title, total=None, rate="", states="")
        self.samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=20)
        self.thread = threading.Thread(target=self._run, name="pilot-progress", daemon=True)

    def update(self) -> float:
        """Read the counts and redraw; the seconds the store query took."""
        began = time.perf_counter()
        counts = self.counts()
        took = time.perf_counter() - began
        total = sum(counts.values())
        final = sum(n for state, n in counts.items() if state in {s.value for s in FINAL_STATES})
        now = time.monotonic()
        self.samples.append((now, final))
        first_time, first_final = self.samples[0]
        rate = (final - first_final) / (now - first_time) if now > first_time else 0.0
        self.progress.update(self.task, total=total or None, completed=final, states=summary(counts),
                             rate=f"{rate:,.0f} units/s" if len(self.samples) > 1 else "")
        self.progress.refresh()
        return took

    def _run(self) -> None:
        interval = INTERVAL
        while not self.stop_event.wait(interval):
            try:
                interval = max(INTERVAL, 20 * self.update())  # a slow store is asked less often
            except Exception:  # the display never breaks a wait: stop drawing, keep waiting
                return

    def __enter__(self) -> _Display:
        self.progress.start()
        with contextlib.suppress(Exception):
            self.update()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join()
        with contextlib.suppress(Exception):
            self.update()  # the last counts stay on the screen
        self.progress.stop()


@contextlib.contextmanager
def shown(counts: Callable[[], Mapping[str, int]], title: str, progress: bool | None) -> Iterator[None]:
    """Show the display around the block when ``wanted(progress)``."""
    if not wanted(progress):
        yield
        return
    with _Display(counts, title):
        yield
