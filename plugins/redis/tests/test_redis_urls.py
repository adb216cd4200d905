"""Store URLs and passwords: the password never shows in the store's URL, object URLs or logs,
and a process holding only the redacted URL finds it in the credentials file or the environment."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pilot import PilotComputeService, PilotError
from pilot.session import Session
from pilot.urls import redact
from pilot_redis.config import credentials_path, find_password, parse_url, remember_password


def test_parse_url_defaults_and_prefix() -> None:
    target = parse_url("redis://:s3cret@example.org/2?prefix=abc")
    assert (target.host, target.port, target.db, target.password, target.prefix) == \
        ("example.org", 6379, 2, "s3cret", "abc")
    assert target.url == "redis://example.org:6379/2?prefix=abc"
    assert target.key_prefix == "pilot:abc:"
    assert parse_url("rediss://u:p@[::1]:7000").url == "rediss://u@[::1]:7000/0"


@pytest.mark.parametrize("url", [
    "redis://:pw@host:6379/notanumber", "redis://:pw@host:6379/0?prefix=a/b", "redis://:pw@host/0?bogus=1",
    "redis://:pw@/0", "http://:pw@host/0", "redis://:pw@host:99999/0", "redis://:pw@host/0#frag",
])
def test_bad_urls_are_rejected_without_the_password(url: str) -> None:
    with pytest.raises(PilotError) as info:
        parse_url(url)
    assert "pw@" not in str(info.value)


def test_credentials_file_is_private_and_found_again(tmp_path: Path) -> None:
    env = {"PILOT_REDIS_CREDENTIALS": str(tmp_path / "creds")}
    remember_password(parse_url("redis://:first@h:1/0"), env)
    remember_password(parse_url("redis://:other@h:1/1"), env)
    remember_password(parse_url("redis://:second@h:1/0"), env)
    path = credentials_path(env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert find_password(parse_url("redis://h:1/0"), env) == "second"
    assert find_password(parse_url("redis://h:1/1"), env) == "other"
    assert find_password(parse_url("redis://h:1/2"), env) is None
    assert find_password(parse_url("redis://h:1/2"), {**env, "PILOT_REDIS_PASSWORD": "env"}) == "env"


def test_store_url_is_redacted_and_reopens_elsewhere(redis_url: str, redis_password: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Object URLs carry no password; another process reopens the store with the redacted URL
    (password from the credentials file the client wrote)."""
    creds = tmp_path / "creds"
    monkeypatch.setenv("PILOT_REDIS_CREDENTIALS", str(creds))
    monkeypatch.delenv("PILOT_REDIS_PASSWORD", raising=False)
    session = Session()
    try:
        pcs = PilotComputeService(redis_url, session=session)
        assert redis_password not in pcs.get_url()
        assert pcs.get_url().startswith(redact(redis_url) + "#pcs/")
        code = "import sys; from pilot import PilotComputeService as P; print(P(pcs_url=sys.argv[1]).id)"
        out = subprocess.run([sys.executable, "-c", code, pcs.get_url()], capture_output=True, text=True,
                             env={**os.environ, "PILOT_REDIS_CREDENTIALS": str(creds)}, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == pcs.id
        empty = {**os.environ, "PILOT_REDIS_CREDENTIALS": str(tmp_path / "none")}
        out = subprocess.run([sys.executable, "-c", code, pcs.get_url()], capture_output=True, text=True,
                             env=empty, timeout=60, check=False)
        assert out.returncode != 0
        assert "authentication failed" in out.stderr and "PILOT_REDIS_PASSWORD" in out.stderr
        assert redis_password not in out.stderr
    finally:
        session.close()


def test_wrong_password_is_a_pilot_error_without_the_password(redis_url: str, redis_password: str,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong password fails at once, is never shown, and never replaces the remembered one."""
    monkeypatch.setenv("PILOT_REDIS_CREDENTIALS", str(tmp_path / "creds"))
    Session().store(redis_url).close()  # remembers the right password
    wrong = redis_url.replace(redis_password, "not-the-password")
    with pytest.raises(PilotError) as info:
        Session().store(wrong)
    assert "authentication failed" in str(info.value)
    assert "not-the-password" not in str(info.value) and redis_password not in str(info.value)
    assert find_password(parse_url(redis_url.replace(f":{redis_password}@", "@"))) == redis_password
