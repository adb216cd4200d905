"""How the agent survives its coordination store: the store-loss timeout, strings a store can
always take, telling a store's failure from a record's, and store calls bounded in time (for the
drain after a signal, when the agent must be gone within seconds whatever the store does)."""

from __future__ import annotations

import math
import os
import threading
from typing import Any

STORE_LOSS_ENV = "PILOT_STORE_LOSS_TIMEOUT"
STORE_LOSS_DEFAULT = 600.0  # seconds without the store before the agent stops its units and exits
DRAIN_STORE_SECONDS = 2.5   # how long the drain's store writes may take after a signal or a lost store
SIGNAL_STORE_SECONDS = 1.5  # how long the signal path may ask the store whether the pilot was canceled
SIGNAL_EXIT_SECONDS = 4.0   # after a signal the agent is gone by then, whatever the store does
#                             (a second's margin to the documented 5 s on a loaded machine)
TEXT_KEYS = ("sandbox", "reason", "host")  # strings an agent writes that may come from paths or the OS


class Interrupted(BaseException):
    """Raised by the signal handler inside a store call of the loop, so a store that retries for
    a minute cannot hold a SIGTERM'd agent (a BaseException: no ``except Exception`` keeps it)."""


def store_loss_timeout(environ: Any = None) -> float:
    """Seconds without the store after which the agent gives up (``PILOT_STORE_LOSS_TIMEOUT``)."""
    raw = (os.environ if environ is None else environ).get(STORE_LOSS_ENV)
    try:
        value = float(raw) if raw else STORE_LOSS_DEFAULT
    except ValueError:
        return STORE_LOSS_DEFAULT
    return value if value > 0 and math.isfinite(value) else STORE_LOSS_DEFAULT


def storable(text: str) -> str:
    """``text`` as UTF-8 a store can take: undecodable bytes of a path (surrogate escapes) and
    lone surrogates become backslash escapes (``dir-\\xff``)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def is_store_failure(exc: BaseException) -> bool:
    """Whether a failed write is the store's fault (unreachable, locked) rather than the records'."""
    return not isinstance(exc, (UnicodeError, ValueError, TypeError, OverflowError))


def bounded(func: Any, seconds: float) -> Any:
    """``func()`` in a daemon thread; ``TimeoutError`` if it takes longer than ``seconds`` (it is
    left behind: the agent is about to exit)."""
    out: list[Any] = []
    failed: list[BaseException] = []

    def call() -> None:
        try:
            out.append(func())
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=call, name="pilot-bounded-store-call", daemon=True)
    thread.start()
    thread.join(max(0.0, seconds))
    if failed:
        raise failed[0]
    if not out:
        raise TimeoutError(f"the store did not answer within {seconds:g} s")
    return out[0]
