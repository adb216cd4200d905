"""Store URLs and passwords: the password never shows in the store's URL, object URLs or logs,
and a process holding only the redacted URL finds it in the credentials file or the environment."""

from __future__ import annotations

import io
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
    assert parse_url("rediss://u:p@[::1]:7000").url == "rediss://u:@[::1]:7000/0"


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
    scoped = {**env, "PILOT_REDIS_PASSWORD": "env", "PILOT_REDIS_PASSWORD_HOSTS": "h:1"}
    assert find_password(parse_url("redis://h:1/2"), scoped) == "env"
    assert find_password(parse_url("redis://h:1/2"), {**env, "PILOT_REDIS_PASSWORD": "env"}) is None  # not loopback


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


# --- BigJob's redis://PASSWORD@host:port ------------------------------------------------------
def test_a_user_part_without_colon_is_a_password_as_in_bigjob() -> None:
    target = parse_url("redis://Zq9-secret@example.org:6390")
    assert (target.username, target.password, target.port, target.db) == (None, "Zq9-secret", 6390, 0)
    assert target.url == "redis://example.org:6390/0" and target.credentials_key == "example.org:6390/0"
    assert parse_url("redis://p%40ss@h/1").password == "p@ss"
    acl = parse_url("redis://alice:Zq9-secret@h:1/0")  # Redis ACL users keep working
    assert (acl.username, acl.password, acl.url) == ("alice", "Zq9-secret", "redis://alice:@h:1/0")
    named = parse_url(acl.url)  # the redacted URL names the user, its password comes from elsewhere
    assert (named.username, named.password, named.credentials_key, named.url) == \
        ("alice", None, "alice@h:1/0", acl.url)


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://Zq9-secret@h:6390", "redis://h:6390"),
    ("rediss://Zq9-secret@h/2?prefix=p", "rediss://h/2?prefix=p"),
    ("redis://alice:Zq9-secret@h", "redis://alice:@h"),
    ("redis://alice:@h", "redis://alice:@h"),
    ("redis://:Zq9-secret@h", "redis://h"),
    ("sftp://alice@h/path", "sftp://alice@h/path"),  # elsewhere a user part without colon is a user
])
def test_redact_hides_the_bigjob_password(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert redact(shown) == shown


@pytest.mark.parametrize("url", [
    "redis://Zq9-secret@host:6379/notanumber", "redis://Zq9-secret@host/0?bogus=1", "redis://Zq9-secret@/0",
    "redis://Zq9-secret@host:99999/0", "redis://Zq9-secret@host/0#frag", "redis://Zq9/secret@host:6379/0",
    "redis://Zq9:sec/ret@host/0", "redis://Zq9-sec#ret@host/0", "redis://Zq9?secret@host",
])
def test_bad_bigjob_urls_are_rejected_without_the_password(url: str) -> None:
    with pytest.raises(PilotError) as info:
        parse_url(url)
    assert "Zq9" not in str(info.value) and "secret" not in str(info.value) and "ret@" not in str(info.value)


def _cmdlines_holding(needle: str) -> list[str]:
    """Command lines of live processes that contain ``needle``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if entry.name.isdigit() and needle in cmdline:
            found.append(cmdline)
    return found


@pytest.mark.timeout(180)
def test_bigjob_password_url_runs_and_the_password_shows_nowhere(
        redis_url: str, redis_password: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A BigJob script's store URL: a fork pilot and a ComputeDataService made without a URL run
    a unit through it; the password is in no object URL, log line, error message or process."""
    import structlog

    from pilot import ComputeDataService, State
    from pilot import log as pilot_log

    url = redis_url.replace(f":{redis_password}@", f"{redis_password}@")
    assert f"://{redis_password}@" in url
    monkeypatch.setenv("PILOT_LOG_LEVEL", "DEBUG")  # the agent logs everything to its agent.log
    monkeypatch.delenv("PILOT_REDIS_PASSWORD", raising=False)
    client_log = io.StringIO()
    pilot_log.configure(stream=client_log, default_level="DEBUG", force=True)
    session = Session()
    pilot = None
    try:
        pcs = PilotComputeService(url, session=session)
        pilot = pcs.create_pilot({"service_url": "fork://localhost", "working_directory": str(tmp_path / "work")})
        cds = ComputeDataService(session=session)  # no URL: it takes the store of the service added
        cds.add_pilot_compute_service(pcs)
        unit = cds.submit_compute_unit({"executable": "/bin/echo", "arguments": ["hello"]})
        cds.wait(timeout=120)
        assert unit.get_state() == State.Done
        agents = _cmdlines_holding(pilot.id)
        assert agents and not [c for c in agents if redis_password in c], agents
        with pytest.raises(PilotError) as info:
            cds.add_pilot_compute_service(PilotComputeService(session=session))  # another store
        messages = [str(info.value)]
        with pytest.raises(PilotError) as info:
            Session().store(url.replace(redis_password, "not-the-password"))
        messages.append(str(info.value))
        urls = [pcs.get_url(), pilot.get_url(), unit.get_url(), cds.get_url(), *unit.get_details().values()]
    finally:
        if pilot is not None:
            pilot.cancel()
        session.close()
        structlog.reset_defaults()
        pilot_log._configured = False
    store_url = redact(url)
    assert store_url == url.replace(f"{redis_password}@", "")
    assert all(u.startswith(store_url + "#") for u in urls[:4]), urls
    assert "authentication failed" in messages[1]
    agent_log = (tmp_path / "work" / pilot.id / "agent.log").read_text()
    assert agent_log  # the agent logged at DEBUG
    for text in (*map(str, urls), *messages, agent_log, client_log.getvalue()):
        assert redis_password not in text and "not-the-password" not in text


def test_an_acl_user_url_keeps_working_and_reopens_from_its_redacted_form(
        redis_url: str, redis_password: str, tmp_path: Path) -> None:
    """``redis://user:password@host`` (here the server's ``default`` user): the redacted URL names
    the user as ``default:@``, so another process reopens it with the remembered password."""
    url = redis_url.replace(f":{redis_password}@", f"default:{redis_password}@")
    session = Session()
    try:
        pcs = PilotComputeService(url, session=session)
        assert pcs.get_url().startswith(redact(url) + "#pcs/") and "://default:@" in pcs.get_url()
        assert redis_password not in pcs.get_url()
        code = "import sys; from pilot import PilotComputeService as P; print(P(pcs_url=sys.argv[1]).id)"
        out = subprocess.run([sys.executable, "-c", code, pcs.get_url()], capture_output=True, text=True,
                             timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == pcs.id
    finally:
        session.close()
