"""Issue 11, item 9: no password, whatever characters it holds (unencoded '/', '#', '?', '@',
'[', newlines, non-ASCII ...), survives ``urls.redact`` or an error message about its URL."""

from __future__ import annotations

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from pilot import PilotError
from pilot.urls import parse, redact, scheme_of

PROPERTY = settings(max_examples=300, deadline=None, database=None)
passwords = st.text(min_size=4, max_size=30).filter(lambda p: p.strip() == p and len(set(p)) > 1)
TEMPLATES = ("redis://:{p}@host.example:6379/0", "redis://alice:{p}@host.example:6379/0#pilot/pilot-1",
             "rediss://:{p}@host.example/3?prefix=x", "redis://{p}@host.example", "sftp://bob:{p}@h/data",
             "REDIS://:{p}@host.example/0#unit/x")


def _hidden(password: str, template: str) -> bool:
    """Whether the password can be told apart from the template's own text."""
    return password not in template.replace("{p}", "") and all(
        password not in redact(template.replace("{p}", filler)) for filler in ("x", "ab:cd"))


@PROPERTY
@given(password=passwords, template=st.sampled_from(TEMPLATES))
@example(password="se/cret", template=TEMPLATES[0])
@example(password="se#cret", template=TEMPLATES[1])
@example(password="se?cret", template=TEMPLATES[0])
@example(password="a@b/c@d", template=TEMPLATES[0])
@example(password="x/y", template=TEMPLATES[3])
def test_redact_never_shows_the_password(password: str, template: str) -> None:
    if template == TEMPLATES[3]:
        assume(":" not in password)  # redis://user:pw@h: the part before the colon is a user name
    assume(_hidden(password, template))
    url = template.replace("{p}", password)
    assert password not in redact(url)


@PROPERTY
@given(password=passwords, template=st.sampled_from(TEMPLATES))
@example(password="se/cret", template=TEMPLATES[0])
@example(password="\uff0fsecret", template=TEMPLATES[0])
@example(password="[secret", template=TEMPLATES[1])
def test_url_errors_never_show_the_password(password: str, template: str) -> None:
    if template == TEMPLATES[3]:
        assume(":" not in password)
    assume(_hidden(password, template))
    # the messages' own words ("malformed", "object URL" ...) are not the password showing
    assume(all(password not in message for message in _messages(template.replace("{p}", "QZQZQZ"))))
    for message in _messages(template.replace("{p}", password)):
        assert password not in message


def _messages(url: str) -> list[str]:
    """The errors (or '') that looking at ``url`` as a store or object URL gives."""
    out = []
    for check in (lambda: scheme_of(url), lambda: parse(url, "unit"), lambda: parse(url + "#unit/x/y", "unit")):
        message = ""
        try:
            check()
        except PilotError as exc:
            message = str(exc)
        out.append(message)
    return out


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:se/cret@h/0", "redis://h/0"), ("redis://:se#cret@h/0", "redis://h/0"),
    ("redis://:se?cret@h/0", "redis://h/0"), ("redis://se/cret@h", "redis://h"),
    ("redis://alice:p/w@h:1/0#pilot/x", "redis://alice:@h:1/0#pilot/x"),
    ("sqlite:///home/a@b/store.sqlite", "sqlite:///home/a@b/store.sqlite"),
    ("ssh://bob@host:22", "ssh://bob@host:22"),
])
def test_redact_with_unencoded_separators(url: str, shown: str) -> None:
    assert redact(url) == shown
