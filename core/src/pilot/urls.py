"""Object URLs: ``<store url>#<kind>/<id>``, so a URL alone reconnects from any process.

The store URL part never carries a password (``redact``); stores read secrets from elsewhere.
"""

from __future__ import annotations

import dataclasses
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
    if not sep or not store_url or not object_id or "/" in object_id:
        raise PilotError(f"not a {kind} URL: {redact(url)!r} (expected '<store url>#{kind}/<id>')")
    if found_kind != kind:
        raise PilotError(f"{redact(url)!r} is a {found_kind or 'malformed'} URL, not a {kind} URL")
    return ObjectUrl(store_url, kind, object_id)


#: Schemes where a user part without a colon is a password (BigJob's ``redis://PASSWORD@host``),
#: so a user name keeps its colon when the password is taken out (``redis://alice:@host``).
PASSWORD_ONLY_USERINFO = frozenset({"redis", "rediss"})


def redact(url: str) -> str:
    """``url`` without any password (``redis://:secret@h/0`` and BigJob's ``redis://secret@h/0``
    -> ``redis://h/0``; ``redis://alice:secret@h`` -> ``redis://alice:@h``); works on malformed
    URLs too, so error messages can always show it."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    redis_like = parts.scheme.lower() in PASSWORD_ONLY_USERINFO
    user = "" if redis_like and ":" not in userinfo else urllib.parse.unquote(userinfo.partition(":")[0])
    netloc = (f"{urllib.parse.quote(user, safe='')}{':' if redis_like else ''}@" if user else "") + hostport
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def scheme_of(url: str) -> str:
    """The scheme of ``url``, lower case; a bare path has scheme ``file``. A malformed URL
    (such as an unclosed ``[``) raises ``PilotError``."""
    try:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise PilotError(f"malformed URL {redact(url)!r}: {exc}") from None
    return scheme or "file"
