"""The ``timeout`` every ``wait()`` takes: seconds as a non-negative finite number, or None."""

from __future__ import annotations

import math
from typing import Any

from pilot.errors import PilotError


def check_timeout(timeout: Any) -> float | None:
    """``timeout`` as seconds (None: no limit); ``PilotError`` naming ``timeout`` for anything
    else: a string, a bool, a negative number, NaN (which would never time out) or infinity."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise PilotError(f"timeout must be a number of seconds or None, got {type(timeout).__name__} "
                         f"{timeout!r}", key="timeout")
    try:
        seconds = float(timeout)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or seconds < 0:
        raise PilotError(f"timeout must be a non-negative finite number of seconds or None, got {timeout!r}",
                         key="timeout")
    return seconds
