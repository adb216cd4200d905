"""Globus errors as the project's errors: ``PilotError`` saying what to do, ``TransientDataError``
for what is worth retrying (HTTP 5xx and 429 after globus-sdk's own retries, lost connections).
Messages carry Globus's code and message, never a token or a header."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from pilot.errors import PilotError, TransientDataError
from pilot_globus.auth import NeedsLogin, login_hint


def consent_hint(exc: BaseException, collections: Iterable[str]) -> str | None:
    """The message for a Globus "consent required" answer, or None when it is not one."""
    info = getattr(exc, "info", None)
    consent = getattr(info, "consent_required", None)
    if not consent:
        return None
    return (f"Globus needs your consent to reach collection(s) {', '.join(sorted(set(collections))) or '?'} "
            f"(data_access): run `{login_hint(collections)}`")


def describe(exc: BaseException) -> str:
    """``code: message`` of a Globus API error (no request details)."""
    code, message = getattr(exc, "code", None), getattr(exc, "message", None) or str(exc)
    status = getattr(exc, "http_status", None)
    return f"{status} {code}: {message}" if code and code != "Error" else f"{status}: {message}"


@contextlib.contextmanager
def translated(collections: Iterable[str]) -> Iterator[None]:
    """Raise Globus errors raised inside as ``PilotError`` / ``TransientDataError``."""
    import globus_sdk

    collections = list(collections)
    try:
        yield
    except NeedsLogin as exc:
        raise PilotError(f"{exc.what}: run `{login_hint(exc.collections or collections)}`") from None
    except globus_sdk.GlobusAPIError as exc:
        hint = consent_hint(exc, collections)
        if hint:
            raise PilotError(hint) from None
        if exc.http_status == 401:
            raise PilotError(f"Globus refused the login ({describe(exc)}): run `{login_hint(collections)}`") from None
        if exc.http_status >= 500 or exc.http_status == 429:
            raise TransientDataError(f"Globus answered {describe(exc)}") from None
        raise PilotError(f"Globus: {describe(exc)}") from None
    except globus_sdk.NetworkError as exc:
        raise TransientDataError(f"cannot reach Globus: {type(exc).__name__}") from None
    except globus_sdk.GlobusSDKUsageError as exc:
        raise PilotError(f"Globus: {exc}") from None
