"""The agent's loop: claim units in batches for the slot workers, write their state changes back
in batches, heartbeat, watch for cancels and walltimes, and drain at the end."""

from __future__ import annotations

import functools
import os
import selectors
import signal
import socket
import threading
import time
from typing import Any

from pilot.agent.claims import Claimer
from pilot.agent.launching import LaunchMethods
from pilot.agent.store_guard import (
    DRAIN_STORE_SECONDS,
    SIGNAL_EXIT_SECONDS,
    SIGNAL_STORE_SECONDS,
    STORE_LOSS_ENV,
    TEXT_KEYS,
    Interrupted,
    bounded,
    is_store_failure,
    storable,
    store_loss_timeout,
)
from pilot.agent.units import exit_reason
from pilot.agent.workers import SlotWorkers
from pilot.lifecycle import lease_seconds, settle_units
from pilot.log import get_logger
from pilot.plugin.types import AgentResources
from pilot.procs import signal_session
from pilot.session import Session
from pilot.states import FINAL_STATES, Kind, State
from pilot.store import CoordinationStore, Record
from pilot.transitions import UnitChange, change_units, transition

FLUSH_EVERY = 0.02      # seconds a state change may wait before it is written (times the crowd)
FLUSH_BATCH = 512       # ... or this many changes
CONTROL_EVERY = 0.2     # seconds between checks for canceled units
IDLE_MAX = 0.05         # longest pause between two claims when there is no work (times the crowd)
KILL_GRACE = 1.0        # seconds between SIGTERM and SIGKILL
PEERS_WAKE = 1.0        # longest sleep of an idle agent (it looks after its peers that often)
FLUSH_BACKOFF_MAX = 1.0  # longest pause between two tries to write changes while the store fails
class Agent:
    """Runs the units of one pilot on the slots of its allocation."""

    def __init__(self, session: Session, store: CoordinationStore, pilot: Record, resources: AgentResources,
                 drain_margin: float = 0.0) -> None:
        self.session, self.store, self.pilot_id = session, store, pilot["id"]
        self.pilot_sandbox = str(pilot["sandbox"])
        self.resources = resources
        self.updates: dict[str, list[Any]] = {}  # unit id -> [changes, states it may leave]
        self.heartbeat_every = min(10.0, float(pilot.get("heartbeat_timeout") or 60.0) / 4)
        self.lease = lease_seconds(pilot)
        walltime = (pilot.get("description") or {}).get("walltime")
        self.walltime_end = (time.monotonic() + max(0.0, walltime * 60 - drain_margin)) if walltime else None
        self.stop: tuple[State, str] | None = None
        self.log = get_logger(pilot=self.pilot_id)
        plugins = session.plugins
        self.selector = selectors.DefaultSelector()
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        # Signals also reach a watchdog thread (through the wakeup fd, written by the C handler even
        # while the loop is blocked in a store call): it halts the slots, wakes the loop, and ends
        # the agent SIGNAL_EXIT_SECONDS later if the drain has not.
        self.signal_r, signal_w = os.pipe()
        os.set_blocking(signal_w, False)
        signal.set_wakeup_fd(signal_w)
        self.wake_w = wake_w
        threading.Thread(target=self._watchdog, name="pilot-signal-watchdog", daemon=True).start()
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        self.signals: list[int] = []
        self.draining = False
        self.signal_at: float | None = None  # monotonic time of the first signal
        self.in_store = False  # the loop is inside a store call a signal may interrupt
        self.loss_timeout = store_loss_timeout()
        self.store_lost_at: float | None = None  # monotonic time of the last success before an outage
        self.store_ok_at = time.monotonic()
        self.flush_after = 0.0  # monotonic time before which a failing store is not tried again
        self.flush_pause = FLUSH_EVERY
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        methods = LaunchMethods(plugins)  # a method no plugin registered fails the unit, naming why
        total = resources.total_slots
        self._stager: Any = None
        self._stager_lock = threading.Lock()
        # the slot workers wake the loop to claim more when the prefetch falls to half
        self.workers = SlotWorkers(resources, methods, str(pilot["sandbox"]), wake_w, low_water=max(1, total // 2),
                                   stager=self.stager)
        self.claimer = Claimer(session, store, pilot, self.workers.total)
        if self.workers.native is not None:  # its events wake the loop
            self.selector.register(self.workers.native.out_fd, selectors.EVENT_READ, None)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.signals.append(signum)
        workers = getattr(self, "workers", None)
        if workers is not None:
            workers.halted.set()  # slots start nothing more; the loop drains
        if self.in_store and not self.draining and len(self.signals) == 1:
            self.in_store = False
            raise Interrupted  # out of a store call that may retry for a minute

    def _watchdog(self) -> None:
        """Wait for a signal; then halt the slots, wake the loop, and make sure the agent ends."""
        while True:
            try:
                got = os.read(self.signal_r, 64)
            except InterruptedError:
                continue
            if not got:
                return
            self.signal_at = time.monotonic()
            self.workers_halted()
            try:
                os.write(self.wake_w, b"\0")
            except OSError:
                pass
            time.sleep(SIGNAL_EXIT_SECONDS)
            me = os.getpid()  # the units first, the log after: the kill must not wait on a log lock
            if os.getsid(0) == me:
                signal_session(me, signal.SIGKILL, spare=me)
            else:
                for unit in list(self.workers.running.values()):
                    unit.signal_group(signal.SIGKILL)
            said = threading.Thread(target=functools.partial(  # a log lock held elsewhere delays the exit 0.2 s at most
                self.log.error, "agent did not end after a signal; killed its units, exiting",
                seconds=SIGNAL_EXIT_SECONDS), daemon=True)
            said.start()
            said.join(0.2)
            os._exit(128 + signal.SIGTERM)

    def workers_halted(self) -> None:
        """Tell the slots to start nothing more (and stop waiting for input data)."""
        workers = getattr(self, "workers", None)
        if workers is not None:
            workers.halt()

    def store_call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """A store call of the loop: a signal interrupts it; success ends an outage."""
        if self.signals and not self.draining:
            raise Interrupted
        self.in_store = True
        try:
            result = func(*args, **kwargs)
        finally:
            self.in_store = False
        self.store_ok_at = time.monotonic()
        if self.store_lost_at is not None:
            self.log.warning("coordination store reachable again",
                             after=round(time.monotonic() - self.store_lost_at, 1))
            self.store_lost_at = None
        return result

    def store_failed(self, what: str, exc: BaseException) -> None:
        """Note a failed store call; log once per outage (not every round)."""
        if self.store_lost_at is None:
            self.store_lost_at = self.store_ok_at
            self.log.warning(f"{what} failed; the agent keeps its units running and retries",
                             error=storable(str(exc)), loss_timeout=self.loss_timeout)

    def stager(self) -> Any:
        """The data stager, built (and ``pilot.data.staging`` imported) on first use."""
        with self._stager_lock:
            if self._stager is None:
                from pilot.data.staging import Stager

                self._stager = Stager(self.session, str(self.pilot_sandbox))
            return self._stager

    # --- state changes, batched -----------------------------------------------------------
    def record(self, unit_id: str, changes: dict[str, Any], only_from: tuple[State, ...] | None) -> None:
        """Queue a state change (``changes["state"]``, from ``only_from`` as far as the table
        allows); a later change of the same unit merges into it and the store sees one edge."""
        for key in TEXT_KEYS:
            value = changes.get(key)
            if type(value) is str and not value.isascii():
                changes[key] = storable(value)
        pending = self.updates.get(unit_id)
        if pending is None:
            self.updates[unit_id] = [changes, only_from]
        else:
            pending[0].update(changes)

    def flush(self) -> None:
        """Write queued changes in one store call (observers hear what was written); units
        changed under us are stopped silently. A batch the store refuses for its content (not
        for being unreachable) is written unit by unit, and a unit that still cannot be written
        ends ``Failed`` with the reason, so one bad record never holds the others."""
        if not self.updates or time.monotonic() < self.flush_after:
            return
        batch = [UnitChange(uid, changes["state"], changes, only_from, self.pilot_id)
                 for uid, (changes, only_from) in self.updates.items()]
        try:
            applied = self.store_call(change_units, self.store, batch, self.session)
        except Exception as exc:
            if is_store_failure(exc):  # the store retried already: keep the changes, try again later
                self.store_failed("state update", exc)
                self.flush_after = time.monotonic() + self.flush_pause
                self.flush_pause = min(2 * self.flush_pause, FLUSH_BACKOFF_MAX)
                return
            applied = self._flush_one_by_one(batch, exc)
        self.flush_pause, self.flush_after = FLUSH_EVERY, 0.0
        self.updates.clear()
        for change in batch:
            unit = self.workers.running.get(change.id)
            if change.id not in applied and unit is not None:
                unit.terminate(None, KILL_GRACE)

    def _flush_one_by_one(self, batch: list[UnitChange], error: BaseException) -> dict[str, State]:
        """Write a refused batch unit by unit; fail the units whose change cannot be written."""
        self.log.warning("state update refused; writing unit by unit", units=len(batch), error=storable(str(error)))
        applied: dict[str, State] = {}
        for change in batch:
            try:
                applied.update(self.store_call(change_units, self.store, [change], self.session))
                continue
            except Exception as exc:
                reason = f"the agent could not record this unit's state: {storable(str(exc))}"
            keep = {k: v for k, v in change.changes.items()
                    if k in ("started", "finished", "exit_code") and v is not None}
            failed = UnitChange(change.id, State.Failed, {**keep, "state": State.Failed, "reason": reason},
                                None, self.pilot_id)
            try:
                applied.update(self.store_call(change_units, self.store, [failed], self.session))
            except Exception as exc:  # nothing more to try for this unit: it is dropped, with a trace
                self.log.error("cannot record unit", unit=change.id, error=storable(str(exc)))
            unit = self.workers.running.get(change.id)
            if unit is not None:  # recorded Failed (or not at all): it must not run on unseen
                unit.terminate(None, KILL_GRACE)
        return applied

    def handle_events(self) -> None:
        """Turn what the slot workers reported into state changes."""
        for event in self.workers.drain_events():
            if event[0] in ("started", "failed", "canceled"):
                self.claimer.count_started()
            if event[0] == "started":
                _, unit, started, sandbox = event
                self.record(unit.id, {"state": State.Running, "started": started, "host": unit.hosts[0],
                                      "sandbox": sandbox}, (State.Pending, State.Staging))
            elif event[0] == "staging":
                _, rec, host, started, sandbox = event
                self.record(rec["id"], {"state": State.Staging, "started": started, "staging_in": started,
                                        "host": host, "sandbox": sandbox}, (State.Pending,))
            elif event[0] == "canceled":
                _, rec, host, sandbox, started = event
                self.workers.canceled.discard(rec["id"])
                self.record(rec["id"], {"state": State.Canceled, "started": started, "finished": time.time(),
                                        "host": host, "sandbox": sandbox}, (State.Pending, State.Staging))
            elif event[0] == "staging-out":
                self.record(event[1].id, {"state": State.Staging, "staging_out": event[2]}, (State.Running,))
            elif event[0] == "ended":
                _, unit, returncode, finished = event
                if unit.silent:
                    self.updates.pop(unit.id, None)
                    continue
                code, reason = exit_reason(returncode) if returncode else (0, None)
                state = State.Done if returncode == 0 else State.Failed
                if unit.end is not None:
                    state, reason = State(unit.end[0]), unit.end[1]
                self.record(unit.id, {"state": state, "exit_code": code, "finished": finished, "reason": reason},
                            None)
            else:
                _, rec, host, sandbox, error, started = event
                self.record(rec["id"], {"state": State.Failed, "started": started, "finished": time.time(),
                                        "host": host, "sandbox": sandbox, "reason": str(error),
                                        "exit_code": error.exit_code}, (State.Pending, State.Staging))

    # --- the loop -------------------------------------------------------------------------
    def start(self) -> bool:
        """Mark the pilot Running with its slots and hosts; False if it ended meanwhile."""
        hosts = sorted({node.host for node in self.resources.nodes})
        renewed = time.monotonic()
        now = time.time()
        started = bool(transition(self.store, Kind.pilot, [self.pilot_id], State.Running, {
            "started": now, "heartbeat": now, "hosts": hosts, "slots": self.workers.total,
            "agent_host": socket.gethostname(), "agent_pid": os.getpid()}, session=self.session))
        if started:
            self.workers.renew_lease(renewed + self.lease)
        return started

    def run(self) -> None:
        """Run until canceled, walltime, failure or a store lost too long, then drain."""
        self.next_heartbeat = self.next_control = self.next_claim = 0.0
        self.idle = 0.002
        self.last_flush = time.monotonic()
        while True:
            try:
                if self.step():
                    break
            except Interrupted:
                self.in_store = False  # a signal came during a store call: check_signals stops us
        assert self.stop is not None
        self.drain(*self.stop)

    def step(self) -> bool:
        """One round of the loop; True when the agent must drain."""
        now = time.monotonic()
        self.check_signals()
        if self.walltime_end is not None and now >= self.walltime_end and self.stop is None:
            self.stop = (State.Done, "pilot walltime reached")
        if self.store_lost_at is not None and now - self.store_lost_at >= self.loss_timeout and self.stop is None:
            self.stop = (State.Failed, f"coordination store unreachable for {now - self.store_lost_at:.0f} s "
                                       f"({STORE_LOSS_ENV}={self.loss_timeout:g})")
            self.log.error("giving up: the coordination store is lost", reason=self.stop[1])
        if now >= self.next_heartbeat and self.stop is None:
            self.next_heartbeat = now + self.heartbeat_every
            self.heartbeat()
        if self.stop is not None:
            return True
        self.workers.pump()
        self.handle_events()
        if (self.workers.busy() or self.workers.waiting()) and now >= self.next_control:
            self.next_control = now + CONTROL_EVERY
            self.check_canceled()
        self.check_deadlines(now)
        ready = self.workers.waiting()
        prefetch = self.claimer.prefetch(now)
        self.workers.low_water = max(1, prefetch // 2)
        want = self.workers.total + prefetch - self.workers.busy() - ready
        hungry = ready <= self.workers.low_water and want > 0 and self.store_lost_at is None
        if hungry and now >= self.next_claim:
            claimed = self.claim(want, now)
            self.idle = 0.002 if claimed else min(self.idle * 2, IDLE_MAX * self.claimer.crowd)
            self.next_claim = now if claimed else now + self.idle
        if self.store_lost_at is None:
            self.claimer_chores(now)
        flush_every = FLUSH_EVERY * self.claimer.crowd
        # an idle agent writes at once: no change of its own would join the batch
        idle = not self.workers.running and not self.workers.busy() and not self.workers.waiting()
        if len(self.updates) >= FLUSH_BATCH or (self.updates and (idle or now - self.last_flush >= flush_every)):
            self.last_flush = now
            self.flush()
        due = [self.next_heartbeat, now + PEERS_WAKE]
        if hungry:
            due.append(self.next_claim)
        if self.workers.running or self.updates:
            due.append(now + flush_every)
        elif self.workers.busy():  # units staging in: look for their cancel in time
            due.append(self.next_control)
        if self.walltime_end is not None:
            due.append(self.walltime_end)
        if self.workers.events.empty():  # events read meanwhile (taking units back) bring no wake: go round now
            self.wait(max(0.0, min(due) - time.monotonic()))
        return False

    def wait(self, timeout: float) -> None:
        """Block until a signal or a slot worker wakes us, or ``timeout`` passes."""
        if self.selector.select(timeout):
            try:
                os.read(self.wake_r, 4096)
            except BlockingIOError:
                pass

    def check_deadlines(self, now: float) -> None:
        """SIGTERM units past their walltime; SIGKILL those that outlived their grace."""
        for unit in list(self.workers.running.values()):
            if unit.kill_at is not None and now >= unit.kill_at:
                unit.signal_group(signal.SIGKILL)
                unit.kill_at = now + KILL_GRACE
            elif unit.deadline is not None and now >= unit.deadline and unit.kill_at is None:
                unit.terminate((State.Failed, "unit walltime reached"), KILL_GRACE)

    def check_signals(self) -> None:
        """Turn SIGTERM/SIGINT/SIGHUP into a stop: Canceled if the user asked, else Failed."""
        if self.signals and self.stop is None:
            name = signal.Signals(self.signals[0]).name
            try:  # bounded: a lost store must not hold a signaled agent
                pilot = (bounded(lambda: self.store.get_pilots([self.pilot_id]), SIGNAL_STORE_SECONDS) or [{}])[0]
            except Exception:
                pilot = {}
            if pilot.get("cancel_requested") or pilot.get("state") == State.Canceled:
                self.stop = (State.Canceled, "pilot canceled")
            else:
                self.stop = (State.Failed, f"agent received {name}")

    def heartbeat(self) -> None:
        """Write the heartbeat and renew the lease on claimed units (a slot starts nothing once
        it ran out); stop when the pilot was canceled or ended elsewhere."""
        renewed = time.monotonic()
        try:
            pilot = self.store_call(self.store.heartbeat, self.pilot_id, time.time())
        except Exception as exc:  # the store retried already: carry on, the next beat may pass
            self.store_failed("heartbeat", exc)
            return
        if pilot is not None and pilot["state"] == State.Running and not pilot.get("cancel_requested"):
            self.workers.renew_lease(renewed + self.lease)
        if pilot is None:
            self.stop = (State.Failed, "pilot record vanished from the store")
        elif pilot.get("cancel_requested") or pilot["state"] == State.Canceled:
            self.stop = self.stop or (State.Canceled, "pilot canceled")
        elif State(pilot["state"]) in FINAL_STATES:
            self.stop = self.stop or (State(pilot["state"]), pilot.get("reason") or "pilot ended")

    def check_canceled(self) -> None:
        """Kill running units whose cancel was requested; drop claimed units that were canceled
        (or taken back) before they started."""
        queued = [rec["id"] for rec in self.workers.queued()]
        try:  # one read of this pilot's active units, only the fields needed
            active = self.store_call(self.store.find_units, pilot_id=self.pilot_id,
                                     states=[State.Pending, State.Staging, State.Running],
                                     fields=("id", "state", "cancel_requested"))
        except Exception as exc:
            self.store_failed("cancel check", exc)
            return
        flagged = [u for u in active if u["cancel_requested"] and u["state"] != State.Pending]
        still_ours = {u["id"] for u in active if u["state"] == State.Pending}
        gone = {unit_id for unit_id in queued if unit_id not in still_ours}
        if gone:
            self.workers.drop(gone)
        for rec in flagged:
            unit = self.workers.running.get(rec["id"])
            if unit is not None:
                unit.terminate((State.Canceled, None), KILL_GRACE)
            else:  # not started: a slot still staging its input gives up
                self.workers.canceled.add(rec["id"])

    def claim(self, want: int, now: float) -> int:
        """Claim up to ``want`` units for the slot workers."""
        try:
            claimed = self.store_call(self.claimer.claim, want, now)
        except Exception as exc:
            self.store_failed("claim", exc)
            return 0
        runnable = []
        for rec in claimed:  # a unit given to this pilot directly may need more slots than it got
            if int(rec["slots"]) > self.workers.total:
                self.record(rec["id"], {"state": State.Failed, "finished": time.time(), "reason":
                                        f"needs {rec['slots']} slots; the pilot has {self.workers.total}"},
                            (State.Pending,))
            else:
                runnable.append(rec)
        self.workers.add(runnable)
        return len(claimed)

    def claimer_chores(self, now: float) -> None:
        """Give back service units held too long; look after the pilots of the same services."""
        try:
            overdue = self.claimer.overdue(self.workers.queued(), now)
            if overdue:
                overdue = self.workers.drop({r["id"] for r in overdue})
                try:
                    self.store_call(self.claimer.give_back, overdue)
                except Exception:
                    self.workers.add(overdue)  # still ours: run them after all
                    raise
            self.store_call(self.claimer.look_after_peers, now)
        except Exception as exc:
            self.store_failed("claim housekeeping", exc)

    # --- the end --------------------------------------------------------------------------
    def drain(self, end: State, reason: str) -> None:
        """Stop every unit, write every change, end the pilot, hand queued units back. After a
        signal, or with the store lost, the store writes get ``DRAIN_STORE_SECONDS`` in all (what
        they do not write, clients settle from the pilot's silence), so the agent ends in seconds."""
        self.draining = True
        self.in_store = False
        self.log.info("draining", state=str(end), reason=reason, running=len(self.workers.running))
        with self.workers.cond:
            self.workers.stopping = True
        self.workers.halt()
        for unit in list(self.workers.running.values()):
            unit.terminate(None, KILL_GRACE)
        never_started = self.workers.stop(KILL_GRACE)
        for unit in list(self.workers.running.values()):
            unit.signal_group(signal.SIGKILL)
        self.workers.stop(KILL_GRACE)
        self.workers.close(2 * KILL_GRACE)
        self.handle_events()
        for rec in never_started:
            self.updates.pop(rec["id"], None)
        self.flush_after = 0.0

        def write() -> None:
            self.flush()
            # units first: whoever sees the pilot final sees its units settled
            settle_units(self.store, self.pilot_id, reason,
                         State.Canceled if end is State.Canceled else State.Failed, session=self.session, release=True)
            transition(self.store, Kind.pilot, [self.pilot_id], end, {
                "finished": time.time(), "reason": None if end is State.Canceled else storable(reason)},
                session=self.session)

        try:
            if self.signal_at is not None or self.signals:
                start = self.signal_at if self.signal_at is not None else time.monotonic()
                bounded(write, max(0.2, start + SIGNAL_EXIT_SECONDS - 0.5 - time.monotonic()))
            elif self.store_lost_at is not None:
                bounded(write, DRAIN_STORE_SECONDS)
            else:
                write()
        except Exception as exc:
            self.log.error("could not record the end of the pilot", error=storable(str(exc)),
                           unwritten=len(self.updates))
        me = os.getpid()
        if os.getsid(0) == me:  # we lead our session: nothing we started may outlive us
            signal_session(me, signal.SIGKILL, spare=me)
