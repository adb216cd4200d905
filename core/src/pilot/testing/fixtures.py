"""pytest fixtures shipped with pilot-core, registered through the ``pytest11`` entry point so a
plugin's own tests can use them: ``pilot_env`` gives a test its own store and work directory and
cancels every pilot it left alive."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilot import session as session_module
from pilot.lifecycle import LIVE_PILOT_STATES, cancel_pilot
from pilot.session import Session, default_store_url


class PilotEnv:
    """What ``pilot_env`` gives a test: its work directory, store URL and session."""

    def __init__(self, root: Path, session: Session) -> None:
        self.root = root
        self.work = root / "work"
        self.session = session
        self.store_url = default_store_url({"PILOT_HOME": str(root / "home")})

    def store(self) -> object:
        """The test's store (opened through the test's session)."""
        return self.session.store(self.store_url)


def _cancel_live_pilots(session: Session, store_url: str) -> None:
    store = session.store(store_url)
    for pilot in store.find_pilots(LIVE_PILOT_STATES):
        try:
            cancel_pilot(session, store, pilot)
        except Exception as exc:  # best effort: the test already has its verdict
            warnings.warn(f"could not cancel pilot {pilot['id']}: {exc}", stacklevel=1)


@pytest.fixture
def pilot_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PilotEnv]:
    """An isolated ``PILOT_HOME`` (so an isolated embedded store), the test's own default
    session, the working directory set to a temporary one; live pilots canceled afterwards."""
    monkeypatch.setenv("PILOT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PILOT_COORDINATION_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    session = Session()
    monkeypatch.setattr(session_module, "_default", session)
    env = PilotEnv(tmp_path, session)
    env.work.mkdir()
    yield env
    if os.path.exists(tmp_path / "home" / "store.sqlite"):
        _cancel_live_pilots(session, env.store_url)
    session.close()
