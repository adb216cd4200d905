"""Object URLs: ``<store url>#<kind>/<id>``, so a URL alone reconnects from any process.

The store URL part never carries a password (``redact``); stores read secrets from elsewhere.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse

from pilot.errors import PilotError

KINDS = ("pcs", "pilot", "unit", "cds", "pds", "pilot-data", "data-unit")


@dataclasses.dataclass(frozen=True)
class ObjectUrl:
    """A parsed object URL."""

    store_url: str
    kind: str
    id: str

    def __str__(self) -> str:
        return f"{self.store_url}#{self.kind}/{self.id}"


def make(store_url: str, kind: str, object_id: str) -> str:
    """The URL of object ``object_id`` of ``kind`` in the store at ``store_url``."""
    return str(ObjectUrl(redact(store_url), kind, object_id))


def parse(url: str, kind: str) -> ObjectUrl:
    """Parse an object URL, checking that it names an object of ``kind``."""
    if not isinstance(url, str):
        raise PilotError(f"a {kind} URL must be a string, got {type(url).__name__}")
    store_url, sep, fragment = url.partition("#")
    found_kind, _, object_id = fragment.partition("/")
    if not sep or not store_url or not object_id or "/" in object_id or found_kind not in KINDS:
        raise PilotError(f"not a {kind} URL: {redact(url)!r} (expected '<store url>#{kind}/<id>')")
    if found_kind != kind:
        raise PilotError(f"{redact(url)!r} is a {found_kind} URL, not a {kind} URL")
    return ObjectUrl(store_url, kind, object_id)


#: Schemes where a user part without a colon is a password (BigJob's ``redis://PASSWORD@host``),
#: so a user name keeps its colon when the password is taken out (``redis://alice:@host``).
PASSWORD_ONLY_USERINFO = frozenset({"redis", "rediss"})
_SCHEME_NO_SLASH = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.\-]*:(?!/)")


def redact(url: str) -> str:
    """``url`` without any password (``redis://:secret@h/0`` and BigJob's ``redis://secret@h/0``
    -> ``redis://h/0``; ``redis://alice:secret@h`` -> ``redis://alice:@h``); works on malformed
    URLs too, so error messages can always show it.

    The user part is taken to end at the LAST ``@`` after ``scheme://`` (whatever comes between:
    a password may hold an unencoded ``/``, ``?``, ``#`` or ``@``), so the password is gone even
    when a parser would have split the URL elsewhere. A URL whose authority is empty
    (``sqlite:///path@x``) has no user part and is returned unchanged."""
    if not isinstance(url, str):
        return "<not a URL>"  # type: ignore[unreachable]  # callers may pass anything
    scheme, sep, rest = url.partition("://")
    if not sep:
        # no authority; but ``redis:secret@host`` may still be meant as one: do not show it
        return "<URL with a user part>" if "@" in url and _SCHEME_NO_SLASH.match(url) else url
    redis_like = scheme.strip().lower() in PASSWORD_ONLY_USERINFO
    if "@" not in rest or (rest.startswith("/") and not redis_like):  # a Redis URL always names a host
        return url
    userinfo, _, hostpart = rest.rpartition("@")
    if redis_like and ":" not in userinfo:
        user = ""  # BigJob's redis://PASSWORD@host
    else:
        user = urllib.parse.unquote(userinfo.partition(":")[0], errors="replace")
    shown_user = f"{urllib.parse.quote(user, safe='')}{':' if redis_like else ''}@" if user else ""
    return f"{scheme}://{shown_user}{hostpart}"


def scheme_of(url: str) -> str:
    """The scheme of ``url``, lower case; a bare path has scheme ``file``. A malformed URL
    (such as an unclosed ``[``) raises ``PilotError``."""
    try:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
    except ValueError as exc:
        # the parser's message may quote the host part, password and all: name the problem only
        problem = "unbalanced '[' or ']'" if "IPv6" in str(exc) else "invalid characters in its host part"
        raise PilotError(f"malformed URL {redact(url)!r}: {problem}") from None
    return scheme or "file"
