"""Linux process helpers (reads ``/proc``): process state, session members, signalling a
session or every process carrying a marker in its environment. A plain module, not a plugin:
the agent and the fork adaptor both use it."""

from __future__ import annotations

import os
import signal
import time


def proc_state(pid: int) -> str | None:
    """The one-letter state of process ``pid`` (``R``, ``S``, ``Z`` ...), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:][:1].decode()


def is_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def session_members(sid: int) -> list[int]:
    """Every live process whose session id is ``sid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                data = stat.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split()
        if int(fields[3]) == sid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry))
    return members


def kill_session(sid: int, *, grace: float = 5.0, spare: int | None = None) -> None:
    """SIGTERM the session leader, wait up to ``grace`` s, then SIGKILL every member left
    (except ``spare``)."""
    try:
        os.kill(sid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    delay = 0.005
    while time.monotonic() < deadline and is_alive(sid):
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    signal_session(sid, signal.SIGKILL, spare=spare)


def signal_session(sid: int, signum: int, *, spare: int | None = None) -> None:
    """Send ``signum`` to every live member of session ``sid`` except ``spare``."""
    for pid in session_members(sid):
        if pid != spare:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass


def cmdline_contains(pid: int, needle: bytes) -> bool:
    """True if process ``pid`` exists and its command line contains ``needle``."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return needle in cmdline.read()
    except OSError:
        return False


def environ_members(entry: bytes) -> list[int]:
    """Every live process (readable to us) whose environment holds ``entry`` (``NAME=value``)."""
    members = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as environ:
                data = environ.read()
        except OSError:
            continue
        if (data.startswith(entry + b"\0") or b"\0" + entry + b"\0" in data) and is_alive(int(name)):
            members.append(int(name))
    return members


def kill_marked(entry: bytes) -> None:
    """SIGKILL every process whose environment holds ``entry``, until none is left (a process
    may start another while we look)."""
    for _ in range(5):
        members = environ_members(entry)
        if not members:
            return
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)
