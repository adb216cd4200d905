"""The agent's entry point (``python -m pilot.agent``): find the pilot, fetch its files, start
the loop (``pilot.agent.runner.Agent``) and end it."""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Iterable

from pilot.agent.profile import install as install_profile
from pilot.agent.runner import Agent
from pilot.log import configure, get_logger
from pilot.plugin.manager import BLOCK_ENV
from pilot.session import Session
from pilot.states import LIVE_PILOT_STATES, Kind, State
from pilot.transitions import transition


def no_resources_reason(blocked: Iterable[str]) -> str:
    """Why a pilot fails when no plugin answered ``pilot_agent_resources``."""
    names = ", ".join(sorted(blocked))
    why = f"blocked by {BLOCK_ENV}: {names}" if names else "not installed"
    return ("no plugin describes the agent's resources: no batch system was recognised here and no "
            f"fallback answered (the built-in plugin host-resources offers this host's slots; {why})")


def run_agent(pilot_id: str, store_url: str, *, drain_margin: float = 0.0) -> int:
    """Entry point of ``python -m pilot.agent``: returns the process exit status."""
    configure(default_level="INFO")
    sys.setswitchinterval(0.0005)  # slot threads returning from fork/exec get the GIL quickly
    gc.set_threshold(100_000, 50, 100)  # the agent's records are short-lived and acyclic
    log = get_logger(pilot=pilot_id)
    session = Session()
    store = session.store(store_url, create=False)  # the pilot is in it: never make a new one
    pilots = store.get_pilots([pilot_id])
    if not pilots:
        log.error("no such pilot in the store", store=store.url)
        return 2
    pilot = pilots[0]
    if State(pilot["state"]) not in LIVE_PILOT_STATES or pilot.get("cancel_requested"):
        log.info("pilot already ended", state=pilot["state"])
        return 0
    resources = session.plugins.agent_resources(dict(os.environ), int(pilot.get("slots") or 1))
    if resources is None:  # no batch system recognised, and no fallback (host-resources blocked?)
        reason = no_resources_reason(session.plugins.blocked)
        log.error("no resources", reason=reason)
        transition(store, Kind.pilot, [pilot_id], State.Failed, {"reason": reason, "finished": time.time()},
                   session=session, only_from=[State.New, State.Pending])
        return 1
    agent = Agent(session, store, pilot, resources, drain_margin)
    profile = install_profile(agent)  # None unless PILOT_AGENT_PROFILE is set: then nothing is wrapped
    transfers = (pilot.get("description") or {}).get("file_transfer")
    if transfers:
        try:
            os.makedirs(agent.pilot_sandbox, exist_ok=True)
            agent.stager().fetch_in(transfers, None)
        except Exception as exc:
            reason = f"pilot file_transfer failed: {exc}"
            log.error("pilot staging failed", reason=reason)
            transition(store, Kind.pilot, [pilot_id], State.Failed, {"reason": reason, "finished": time.time()},
                       session=session, only_from=[State.New, State.Pending])
            return 1
    if not agent.start():
        log.info("pilot ended before the agent started")
        return 0
    log.info("agent running", slots=agent.workers.total, source=resources.source)
    try:
        agent.run()
    except Exception as exc:
        log.exception("agent failed")
        agent.drain(State.Failed, f"agent error: {exc}")
        return 1
    finally:
        if profile is not None:
            profile.close()
        session.close()
    return 0
