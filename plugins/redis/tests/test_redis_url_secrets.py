"""Issue 11, item 9: a Redis store URL's parse errors never show its password, whatever
characters it holds (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from pilot import PilotError
from pilot.urls import redact
from pilot_redis.config import parse_url

PROPERTY = settings(max_examples=300, deadline=None, database=None)
passwords = st.text(min_size=4, max_size=30).filter(lambda p: len(set(p)) > 1)
TEMPLATES = ("redis://:{p}@host.example:6379/0", "redis://alice:{p}@host.example:6379/0?prefix=a",
             "redis://{p}@host.example", "redis://:{p}@host.example:port/0", "redis://:{p}@host.example/x",
             "redis://:{p}@host.example/0?bad=1", "redis://:{p}@host.example/0#frag", "redis://:{p}@[::1/0")


@PROPERTY
@given(password=passwords, template=st.sampled_from(TEMPLATES))
@example(password="se/cret", template=TEMPLATES[0])
@example(password="x@y:z/w", template=TEMPLATES[0])
@example(password="\uff0fsecret", template=TEMPLATES[0])
@example(password="sec\nret", template=TEMPLATES[0])
@example(password="p@q/r", template=TEMPLATES[4])
def test_parse_errors_never_show_the_password(password: str, template: str) -> None:
    if template == TEMPLATES[2]:
        assume(":" not in password)
    skeleton = template.replace("{p}", "")
    assume(password not in skeleton and password not in redact(template.replace("{p}", "x")))
    # the message's own words ("coordination_url" ...) are not the password showing
    assume(password not in _shown(template.replace("{p}", "QZQZQZ")))
    assert password not in _shown(template.replace("{p}", password))


def _shown(url: str) -> str:
    """What a user sees of ``url``: the store URL, or the error with its key."""
    try:
        return parse_url(url).url
    except PilotError as exc:
        return f"{exc} (key {exc.key})"


@pytest.mark.parametrize("url", ["redis://:se/cret@h/0", "redis://:se#cret@h/0", "redis://:se?cret@h/0",
                                 "redis://:x@y:cret/w@h/0", "redis://:\uff0fcret@h/0", "redis://:se\ncret@h/0"])
def test_malformed_password_is_refused_without_being_shown(url: str) -> None:
    with pytest.raises(PilotError) as info:
        parse_url(url)
    assert "cret" not in str(info.value)
