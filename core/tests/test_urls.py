"""Object URLs: make, parse, redact."""

from __future__ import annotations

import pytest

from pilot import PilotError
from pilot.urls import KINDS, ObjectUrl, make, parse, redact, scheme_of


@pytest.mark.parametrize("kind", KINDS)
def test_make_and_parse_round_trip(kind: str) -> None:
    url = make("sqlite:///home/me/.pilot/store.sqlite", kind, "x-123")
    assert url == f"sqlite:///home/me/.pilot/store.sqlite#{kind}/x-123"
    assert parse(url, kind) == ObjectUrl("sqlite:///home/me/.pilot/store.sqlite", kind, "x-123")
    assert str(parse(url, kind)) == url


def test_make_never_keeps_a_password() -> None:
    url = make("redis://:s3cret@redis.example.org:6379/0", "pilot", "pilot-1")
    assert url == "redis://redis.example.org:6379/0#pilot/pilot-1"
    assert "s3cret" not in url
    assert parse(url, "pilot").store_url == "redis://redis.example.org:6379/0"


@pytest.mark.parametrize(("url", "message"), [
    ("sqlite:///s.sqlite", "not a unit URL"),
    ("sqlite:///s.sqlite#unit/", "not a unit URL"),
    ("sqlite:///s.sqlite#unit", "not a unit URL"),
    ("#unit/cu-1", "not a unit URL"),
    ("sqlite:///s.sqlite#unit/cu-1/extra", "not a unit URL"),
    ("sqlite:///s.sqlite#pilot/pilot-1", "is a pilot URL, not a unit URL"),
    ("sqlite:///s.sqlite#/cu-1", "not a unit URL"),
    ("sqlite:///s.sqlite#du/du-1", "not a unit URL"),  # no such kind: the expected form is named
])
def test_parse_rejects_what_is_not_a_url_of_that_kind(url: str, message: str) -> None:
    with pytest.raises(PilotError, match=message):
        parse(url, "unit")


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(PilotError, match="must be a string"):
        parse(None, "unit")  # type: ignore[arg-type]


@pytest.mark.parametrize(("url", "redacted"), [
    ("redis://:s3cret@localhost:6379/0", "redis://localhost:6379/0"),
    ("redis://alice:s3cret@localhost:6379/0", "redis://alice:@localhost:6379/0"),
    ("redis://:s3cret@localhost/0", "redis://localhost/0"),
    ("redis://:@localhost:6379/0", "redis://localhost:6379/0"),
    ("redis://:p@ss@localhost:6379/0", "redis://localhost:6379/0"),
    ("rediss://:s3cret@[::1]:6380/2?ssl_cert_reqs=none", "rediss://[::1]:6380/2?ssl_cert_reqs=none"),
    ("sftp://bob:pw@host:2222/data", "sftp://bob@host:2222/data"),
    ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ("redis://s3cret@localhost:6379/0", "redis://localhost:6379/0"),  # BigJob's form: a password
    ("sqlite:///home/me/store.sqlite", "sqlite:///home/me/store.sqlite"),
    ("/a/bare/path", "/a/bare/path"),
])
def test_redact(url: str, redacted: str) -> None:
    assert redact(url) == redacted
    assert redact(redacted) == redacted


@pytest.mark.parametrize(("url", "scheme"), [
    ("fork://localhost", "fork"),
    ("SLURM://cluster", "slurm"),
    ("sqlite:///x", "sqlite"),
    ("/a/bare/path", "file"),
    ("relative/path", "file"),
    ("k8s://ctx/ns", "k8s"),
])
def test_scheme_of(url: str, scheme: str) -> None:
    assert scheme_of(url) == scheme
