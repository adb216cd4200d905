"""Shared plumbing of the FAKE Globus used by tests (not the Globus service).

Requests, replies, error bodies and scope-string parsing shared by the fake Auth, Transfer and
collection HTTPS services.
"""

from __future__ import annotations

import datetime
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRANSFER_RS = "transfer.api.globus.org"
AUTH_RS = "auth.globus.org"
TRANSFER_SCOPE = "urn:globus:auth:scope:transfer.api.globus.org:all"
AUTH_SCOPES = frozenset(
    {
        "openid",
        "profile",
        "email",
        "urn:globus:auth:scope:auth.globus.org:view_identity_set",
        "urn:globus:auth:scope:auth.globus.org:view_identities",
    }
)
_COLLECTION_SCOPE = re.compile(r"^https://auth\.globus\.org/scopes/([0-9a-fA-F-]{36})/(https|data_access)$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def is_uuid(value: str) -> bool:
    """True when ``value`` looks like a UUID."""
    return bool(_UUID.match(value))


@dataclass
class Request:
    """One HTTP request as seen by a fake service (``path`` is relative to the service prefix)."""

    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes = b""

    def json(self) -> dict[str, Any]:
        """The body parsed as a JSON object (``{}`` when empty or not an object)."""
        try:
            data = json.loads(self.body or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def bearer(self) -> str | None:
        """The bearer token of the ``Authorization`` header, if any."""
        value = self.headers.get("Authorization", "")
        if value[:7].lower() == "bearer ":
            return value[7:].strip()
        return None


@dataclass
class Reply:
    """One HTTP reply; ``file`` (with ``start``/``length``) streams a file instead of ``body``."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None
    start: int = 0
    length: int = 0


class ApiError(Exception):
    """Raised by a fake service handler: becomes an error reply."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body
        self.headers = headers or {}


def json_reply(status: int, doc: Any, headers: dict[str, str] | None = None) -> Reply:
    """A JSON reply."""
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    return Reply(status, json.dumps(doc).encode(), hdrs)


def request_id() -> str:
    """A random request id like Transfer's (9 characters)."""
    return secrets.token_urlsafe(7)[:9]


def transfer_error(status: int, code: str, message: str, resource: str, **extra: Any) -> ApiError:
    """A Transfer-style error: ``{code, message, request_id, resource}``."""
    body: dict[str, Any] = {"code": code, "message": message, "request_id": request_id(), "resource": resource}
    body.update(extra)
    return ApiError(status, body)


def auth_error(status: int, error: str, description: str = "") -> ApiError:
    """An Auth-style error: OAuth2 ``{error, error_description}`` plus an ``errors`` list."""
    body = {
        "error": error,
        "error_description": description or error,
        "errors": [{"status": str(status), "code": error.upper(), "detail": description or error, "title": error}],
    }
    return ApiError(status, body)


STATUS_CODES = {
    400: "BadRequest",
    401: "AuthenticationFailed",
    403: "PermissionDenied",
    404: "NotFound",
    409: "Conflict",
    429: "RequestLimitExceeded",
    500: "InternalError",
    502: "BadGateway",  # not "ExternalError": globus-sdk never retries those
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


def injected_error(service: str, status: int, path: str) -> ApiError:
    """The error body a service answers with for a ``fail_next`` injected failure."""
    code = STATUS_CODES.get(status, "Error")
    message = f"injected failure ({status} {code}) by FakeGlobus.fail_next"
    if service == "auth":
        return auth_error(status, re.sub(r"(?<!^)(?=[A-Z])", "_", code).lower(), message)
    if service == "transfer":
        return transfer_error(status, code, message, path)
    return ApiError(status, {"code": code, "message": message, "http_response_code": status})


def utcnow() -> datetime.datetime:
    """The current UTC time."""
    return datetime.datetime.now(datetime.UTC)


def transfer_time(when: datetime.datetime | float | None = None) -> str:
    """A Transfer API timestamp: ``YYYY-MM-DD HH:MM:SS+00:00``."""
    if when is None:
        when = utcnow()
    elif isinstance(when, (int, float)):
        when = datetime.datetime.fromtimestamp(when, datetime.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S+00:00")


@dataclass(frozen=True)
class ParsedScope:
    """A scope string and its dependent scopes (``optional`` for a ``*`` prefix)."""

    scope: str
    dependencies: tuple[ParsedScope, ...] = ()
    optional: bool = False


def parse_scopes(text: str) -> list[ParsedScope]:
    """Parse a space-separated scope string with bracketed dependencies, e.g. ``a[*b c[d]] e``."""
    pos = 0

    def parse_list(closing: str | None) -> list[ParsedScope]:
        nonlocal pos
        out: list[ParsedScope] = []
        while pos < len(text):
            char = text[pos]
            if char.isspace():
                pos += 1
            elif char == "]":
                if closing != "]":
                    raise ValueError(f"unbalanced ']' in scope string {text!r}")
                pos += 1
                return out
            else:
                optional = char == "*"
                if optional:
                    pos += 1
                start = pos
                while pos < len(text) and not text[pos].isspace() and text[pos] not in "[]":
                    pos += 1
                name = text[start:pos]
                if not name:
                    raise ValueError(f"empty scope in {text!r}")
                deps: list[ParsedScope] = []
                if pos < len(text) and text[pos] == "[":
                    pos += 1
                    deps = parse_list("]")
                out.append(ParsedScope(name, tuple(deps), optional))
        if closing is not None:
            raise ValueError(f"unbalanced '[' in scope string {text!r}")
        return out

    return parse_list(None)


def resource_server_of(scope: str, collections: Mapping[str, object]) -> str | None:
    """The resource server a top-level scope belongs to, or None when the scope is unknown."""
    if scope == TRANSFER_SCOPE:
        return TRANSFER_RS
    if scope in AUTH_SCOPES:
        return AUTH_RS
    match = _COLLECTION_SCOPE.match(scope)
    if match and match.group(2) == "https" and match.group(1).lower() in collections:
        return match.group(1).lower()
    return None


def data_access_collection(scope: str) -> str | None:
    """The collection UUID of a ``.../scopes/<uuid>/data_access`` scope, else None."""
    match = _COLLECTION_SCOPE.match(scope)
    if match and match.group(2) == "data_access":
        return match.group(1).lower()
    return None


def data_access_scope(collection_id: str) -> str:
    """The ``data_access`` scope string of a collection."""
    return f"https://auth.globus.org/scopes/{collection_id}/data_access"


def https_scope(collection_id: str) -> str:
    """The ``https`` scope string of a collection."""
    return f"https://auth.globus.org/scopes/{collection_id}/https"
