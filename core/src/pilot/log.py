"""structlog set-up: key-value lines by default, JSON with ``PILOT_LOG_FORMAT=json``, level from
``PILOT_LOG_LEVEL`` (default ``WARNING``). Configured on first use, never at import."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog

LEVEL_ENV = "PILOT_LOG_LEVEL"
FORMAT_ENV = "PILOT_LOG_FORMAT"
_configured = False


def configure(stream: TextIO | None = None, *, default_level: str = "WARNING", force: bool = False) -> None:
    """Configure structlog for this process once (again with ``force``)."""
    global _configured
    if _configured and not force:
        return
    level_name = os.environ.get(LEVEL_ENV, default_level).upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        level = logging.WARNING
    renderer: Any = (structlog.processors.JSONRenderer() if os.environ.get(FORMAT_ENV, "").lower() == "json"
                     else structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"]))
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(**bound: Any) -> Any:
    """A structlog logger with ``bound`` context, configuring logging on first use."""
    configure()
    return structlog.get_logger("pilot").bind(**bound)
