"""The one exception type the package raises on purpose."""

from __future__ import annotations


class PilotError(Exception):
    """Base of every error that ``pilot`` raises on purpose.

    ``key`` names the description key or setting at fault, when there is one; ``value`` is the
    message (BigJob's name for it).
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key

    @property
    def value(self) -> str:
        """The message, as BigJob's ``PilotError.value``."""
        return str(self.args[0]) if self.args else ""


class IllegalTransition(PilotError):
    """A state change that the transition table does not allow: always a bug."""


class TransientDataError(PilotError):
    """A data transfer failed in a way worth retrying (a dropped connection, a timeout)."""


class StoreClosed(PilotError):
    """The coordination store was closed (its session ended); nothing more can be read or written."""
