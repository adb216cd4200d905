"""Logging: key-value lines by default, JSON on request, level from the environment, and no
secret from a store URL ever reaches an agent's log."""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from pilot import PilotComputeService, State
from pilot import log as pilot_log
from pilot.log import configure, get_logger
from pilot.session import Session


@pytest.fixture(autouse=True)
def _reset_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts from an unset PILOT_LOG_* and leaves logging unconfigured."""
    monkeypatch.delenv("PILOT_LOG_LEVEL", raising=False)
    monkeypatch.delenv("PILOT_LOG_FORMAT", raising=False)
    yield
    structlog.reset_defaults()
    pilot_log._configured = False


def _emit(**env: str) -> list[str]:
    """Configure with ``env`` set, log one line per level, return the lines written."""
    stream = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        configure(stream=stream, force=True)
    log = get_logger(pilot="pilot-1")
    log.debug("debug line", n=1)
    log.info("info line", n=2)
    log.warning("warning line", n=3)
    log.error("error line", n=4)
    return stream.getvalue().splitlines()


def test_key_value_lines_by_default() -> None:
    lines = _emit()
    assert len(lines) == 2, lines
    warning = lines[0]
    assert warning.startswith("timestamp=")
    assert "level='warning'" in warning
    assert "event='warning line'" in warning
    assert "pilot='pilot-1'" in warning
    assert "n=3" in warning
    assert "level='error'" in lines[1]


def test_json_lines_on_request() -> None:
    lines = _emit(PILOT_LOG_FORMAT="json")
    records = [json.loads(line) for line in lines]
    assert [r["event"] for r in records] == ["warning line", "error line"]
    assert records[0]["level"] == "warning"
    assert records[0]["pilot"] == "pilot-1"
    assert records[0]["n"] == 3
    assert "timestamp" in records[0]


@pytest.mark.parametrize(("level", "events"), [
    ("DEBUG", ["debug line", "info line", "warning line", "error line"]),
    ("info", ["info line", "warning line", "error line"]),
    ("ERROR", ["error line"]),
    ("nonsense", ["warning line", "error line"]),
])
def test_level_from_the_environment(level: str, events: list[str]) -> None:
    lines = _emit(PILOT_LOG_LEVEL=level, PILOT_LOG_FORMAT="JSON")
    assert [json.loads(line)["event"] for line in lines] == events


def test_configure_once_unless_forced() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure(stream=first, force=True)
    configure(stream=second)
    get_logger().error("where")
    assert "where" in first.getvalue()
    assert second.getvalue() == ""


def test_exceptions_are_rendered() -> None:
    stream = io.StringIO()
    configure(stream=stream, force=True)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger().exception("failed")
    out = stream.getvalue()
    assert "RuntimeError: boom" in out
    assert "event='failed'" in out


# --- secrets and the agent log ---------------------------------------------------------------
SECRET = "s3cret-Pa55"
_FAKE_STORE = textwrap.dedent('''
    """A stand-in for a networked store: speaks fakeredis:// URLs, keeps data in SQLite, and (like any
    store might) logs the URL it was asked to open."""
    import os, urllib.parse
    from pilot.log import get_logger
    from pilot.plugin import hookimpl
    from pilot.plugin.types import CoordinationStoreRecord
    from pilot.store.sqlite import SQLiteStore
    from pilot.urls import redact

    def open_store(url):
        get_logger().info("opening fake redis store", url=url)
        parts = urllib.parse.urlsplit(url)
        store = SQLiteStore(os.path.join(os.environ["FAKE_REDIS_DIR"], f"{parts.hostname}-{parts.port}.sqlite"))
        store.url = redact(url)
        return store

    @hookimpl
    def pilot_coordination_stores():
        return [CoordinationStoreRecord(name="fakeredis", schemes=("fakeredis",), open=open_store)]
''')


@pytest.fixture
def fake_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake redis store plugin, visible to this process and to agents it starts (through
    an installed-distribution record on ``PYTHONPATH``); returns its data directory."""
    plugin_dir = tmp_path / "plugin"
    dist_info = plugin_dir / "pilot_fakeredis_test-0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: pilot-fakeredis-test\nVersion: 0\n")
    (dist_info / "entry_points.txt").write_text("[pilot]\nfakeredis = pilot_fakeredis_test\n")
    (plugin_dir / "pilot_fakeredis_test.py").write_text(_FAKE_STORE)
    data = tmp_path / "redis-data"
    data.mkdir()
    monkeypatch.syspath_prepend(str(plugin_dir))
    monkeypatch.setenv("PYTHONPATH", str(plugin_dir))
    monkeypatch.setenv("FAKE_REDIS_DIR", str(data))
    monkeypatch.setenv("PILOT_LOG_LEVEL", "DEBUG")
    return data


@pytest.mark.timeout(120)
def test_agent_log_never_holds_the_store_password(fake_redis: Path, tmp_path: Path) -> None:
    """A pilot on a store opened with ``fakeredis://:<password>@host/db`` runs a unit, and neither
    its agent's log, nor object URLs, nor the store hold the password."""
    session = Session()
    pilot = None
    try:
        pcs = PilotComputeService(coordination_url=f"fakeredis://:{SECRET}@127.0.0.1:6379/0", session=session)
        pilot = pcs.create_pilot({"service_url": "fork://localhost", "working_directory": str(tmp_path / "work")})
        cu = pilot.submit_compute_unit({"executable": "/bin/echo", "arguments": ["hello"]})
        cu.wait(timeout=60)
        assert cu.get_state() == State.Done
        urls = [pcs.get_url(), pilot.get_url(), cu.get_url()]
    finally:
        if pilot is not None:
            pilot.cancel()
        session.close()
    assert all(url.startswith("fakeredis://127.0.0.1:6379/0#") for url in urls), urls
    agent_log = (tmp_path / "work" / pilot.id / "agent.log").read_text()
    # The agent opened the store and logged the URL it was given: the redacted one.
    assert "opening fake redis store" in agent_log
    assert "url='fakeredis://127.0.0.1:6379/0'" in agent_log
    assert SECRET not in agent_log
    for path in fake_redis.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path
