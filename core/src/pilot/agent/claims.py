"""How an agent takes work (late binding by pull): it claims the next units of its services'
queues straight from the store as its slots free up, holds only a small prefetch, hands back
what it held too long, and looks after the pilots it shares its services with.

- Units without placement constraints (no affinity label, no ``input_data``) are claimed in one
  atomic store call, oldest first, with the units bound to the pilot directly.
- Units with constraints, and every unit when an installed plugin replaces the placement
  policy, go through ``pilot_place_unit`` (``pilot.binding.choose``): the agent binds those the
  policy gives to its pilot, then claims them.
- Prefetch: at most ``PREFETCH_PER_SLOT`` units per slot beyond the slots, and no more than
  ``PREFETCH_SECONDS`` of work at the recent start rate (at least one unit per slot), stretched
  with the number of pilots sharing the services (``crowd``).
- A service unit held ``HOLD_SECONDS`` without starting (longer in a crowd: ``hold_seconds``) goes
  back to its service's queue.
- An agent whose last claim found nothing asks again only once the store's change marker moved
  (or its services are due a re-read): idle pilots cost the store a cheap read, not queries.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pilot.binding import (
    HOLD_SECONDS,
    PREFETCH_PER_SLOT,
    PREFETCH_SECONDS,
    QUEUE_FIELDS,
    choose,
    custom_policy,
    pcs_of,
    pilot_views,
    pilots_of_services,
)
from pilot.lifecycle import refresh_pilot, release_orphans
from pilot.log import get_logger
from pilot.states import CLAIMABLE_STATE, State
from pilot.store import CoordinationStore, Record, change_marker
from pilot.transitions import change_units

if TYPE_CHECKING:
    from pilot.session import Session

SERVICES_EVERY = 0.5  # seconds between two reads of the services the pilot serves ...
SERVICES_RECHECK = 0.02  # ... or this few after a claim found nothing and the store changed since
PEERS_EVERY = 1.0     # seconds between two looks at the other pilots of those services ...
PEERS_LOOKS = 10.0    # ... stretched so all their agents together look about this often a second
CROWD_PILOTS = 5.0    # running pilots per step of the crowd, which stretches prefetch and write pause ...
CROWD_MAX = 10.0      # ... at most this many times
HELD = "_held_since"  # key of a claimed record: when this agent claimed it (monotonic)


class Claimer:
    """The claiming side of one agent."""

    def __init__(self, session: Session, store: CoordinationStore, pilot: Record, total_slots: int) -> None:
        self.session, self.store = session, store
        self.pilot_id, self.pcs_id = pilot["id"], pilot.get("service_id")
        self.total = total_slots
        self.custom = custom_policy(session)
        self.services: list[str] = []
        self._services_at = -math.inf
        self._peers_at = time.monotonic()
        self._peers_every = PEERS_EVERY
        self.crowd = 1.0  # how much the number of peer pilots stretches prefetch and write pause
        self.rate = 0.0  # units started per second, smoothed
        self._empty_at: int | None = None  # the store's change marker when a claim last found nothing
        self._started = 0
        self._rate_at = time.monotonic()
        self.log = get_logger(pilot=self.pilot_id)

    # --- how much to hold -------------------------------------------------------------------
    def count_started(self, n: int = 1) -> None:
        """Record that ``n`` units started (or failed to)."""
        self._started += n

    def prefetch(self, now: float) -> int:
        """Units to hold beyond the slots: enough for ``PREFETCH_SECONDS`` (times ``crowd``) at
        the recent start rate, at least one per slot, at most ``PREFETCH_PER_SLOT`` per slot."""
        elapsed = now - self._rate_at
        if elapsed >= 0.1:
            self.rate = 0.5 * self.rate + 0.5 * self._started / elapsed
            self._started, self._rate_at = 0, now
        wanted = math.ceil(self.rate * PREFETCH_SECONDS * self.crowd - 1e-6)
        return max(self.total, min(PREFETCH_PER_SLOT * self.total, wanted))

    # --- where to take from -----------------------------------------------------------------
    def refresh_services(self, now: float, changed: bool = False) -> list[str]:
        """The compute data services whose queues this pilot serves (those whose units agents
        bind), re-read every ``SERVICES_EVERY`` s so a pilot added anywhere takes work at once,
        and after ``SERVICES_RECHECK`` s when the store ``changed`` since a claim found nothing
        (a service linked to this pilot's after it started gets its first units claimed at once)."""
        due = SERVICES_RECHECK if changed else SERVICES_EVERY
        if now - self._services_at >= due and self.pcs_id:
            self._services_at = now
            cds_ids = [c for c in self.store.children(self.pcs_id) if c.startswith("cds-")]
            records = self.store.get_services(cds_ids) if cds_ids else []
            self.services = [r["id"] for r in records if (r["data"] or {}).get("placement", "agents") == "agents"]
        return self.services

    def claim(self, want: int, now: float) -> list[Record]:
        """Claim up to ``want`` units for this pilot: policy-placed ones first, then the plain
        queue and units bound to the pilot directly, in one atomic call."""
        if want <= 0:
            return []
        marker = change_marker(self.store, None, 0)  # a cheap read: nothing changed, nothing to claim
        if marker is not None and marker == self._empty_at and now - self._services_at < SERVICES_EVERY:
            return []
        services = self.refresh_services(now, changed=self._empty_at is not None and marker != self._empty_at)
        if services:
            self._bind_by_policy(services, want)
        claimed: list[Record] = self.store.claim_units(self.pilot_id, want, () if self.custom else services,
                                                       self.total)
        self._empty_at = None if claimed else marker
        for record in claimed:
            record[HELD] = now
        return claimed

    def _bind_by_policy(self, services: Sequence[str], want: int) -> None:
        """Bind to this pilot the queued units the placement policy gives it."""
        queued: list[Record] = []
        for cds_id in services:
            queued += self.store.find_units(cds_id=cds_id, states=[CLAIMABLE_STATE], unbound=True,
                                            constrained=not self.custom, limit=want + 16, fields=QUEUE_FIELDS)
        if not queued:
            return
        views = pilot_views(self.store, pilots_of_services(self.store, services))
        if all(v.id != self.pilot_id for v in views):
            return
        bindings, failed = choose(self.session, self.store, queued, views)
        change_units(self.store, failed, self.session)
        mine = [pair for pair in bindings if pair[1] == self.pilot_id][:want]
        if mine:
            self.store.bind_units(mine)

    # --- giving back and looking after peers ------------------------------------------------
    def hold_seconds(self) -> float:
        """How long a claimed unit may wait here to start: ``HOLD_SECONDS``, or twice the work
        this agent prefetches (``PREFETCH_SECONDS`` x ``crowd``) when that is longer, so that a
        crowded agent does not hand back units it is on time for (among 50 pilots, 4 % of the
        units went back and were claimed again with a hold of 1 s)."""
        return max(HOLD_SECONDS, 2 * PREFETCH_SECONDS * self.crowd)

    def overdue(self, ready: Sequence[Record], now: float) -> list[Record]:
        """Service units held longer than ``hold_seconds()`` without starting."""
        hold = self.hold_seconds()
        return [r for r in ready if r.get("cds_id") and now - r.get(HELD, now) > hold]

    def give_back(self, records: Sequence[Record]) -> list[str]:
        """Hand units this agent holds back to their service's queue; the ids given back."""
        if not records:
            return []
        given: list[str] = self.store.unbind_units(self.pilot_id, [r["id"] for r in records])
        return given

    def look_after_peers(self, now: float) -> None:
        """Every ``PEERS_EVERY`` s: fail pilots of the same services whose agents went silent
        (their units go back to the queue), and give back units ended pilots' agents left
        claimed once those agents' leases ran out. Pilots keep each other honest, so units do
        not depend on a client being alive. With more than ``PEERS_LOOKS`` pilots each agent looks
        less often (with jitter), so the pilots of a service look about ``PEERS_LOOKS`` times a
        second in all: the cost grows with the pilots, not with their square. The running ones set
        ``crowd`` (pilots / ``CROWD_PILOTS``): with more than ``CROWD_PILOTS`` running pilots sharing the
        store, each agent claims and writes in larger, rarer batches (up to ``CROWD_MAX`` times), since
        every store transaction then waits on the others'."""
        if now - self._peers_at < self._peers_every or not self.services:
            return
        self._peers_at = now
        pcs_ids = list(dict.fromkeys(p for cds in self.services for p in pcs_of(self.store, cds)))
        pilots = [p for p in self.store.pilots_of(pcs_ids) if p["id"] != self.pilot_id]
        running = sum(1 for p in pilots if p["state"] == State.Running)  # queued or ended ones write nothing
        self.crowd = min(CROWD_MAX, max(1.0, (running + 1) / CROWD_PILOTS))
        self._peers_every = PEERS_EVERY * max(1.0, (len(pilots) + 1) / PEERS_LOOKS) * random.uniform(0.75, 1.25)  # noqa: S311 (jitter)
        pilots = [refresh_pilot(self.session, self.store, p, ask_batch=False)
                  if p["state"] == State.Running else p for p in pilots]
        given = release_orphans(self.session, self.store, pilots)
        if given:
            self.log.info("gave back units of ended pilots", units=len(given))
