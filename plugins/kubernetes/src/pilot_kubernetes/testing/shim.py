"""Container shim of the EMULATED kubelet (an emulation for tests, not Kubernetes; Linux only).

``python -I shim.py STATUS_FD -- COMMAND...`` plays the container runtime's part for one
emulated container: it makes itself a child subreaper (so every process the container starts,
even in sessions of its own or orphaned, stays below it, as in a container's PID namespace),
starts COMMAND in a new session, and writes ``ok`` or ``error <strerror>`` to STATUS_FD. SIGTERM
is passed to the command's main process; SIGUSR1 kills the container (SIGKILL). When the main
process ends, every process left below the shim is killed, as when a PID namespace's init
ends, and the shim exits with the main process's status (128 + signal if it was killed).
Standard library only: it runs with ``-I`` and imports nothing of pilot.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36


def _descendants(root: int) -> list[int]:
    """Pids of every process below ``root`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _end_everything() -> None:
    """SIGKILL and reap every process below this one until none is left."""
    while True:
        for pid in _descendants(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def main(argv: list[str]) -> int:
    """Run the container; its exit status."""
    status_fd, command = int(argv[0]), argv[2:]
    main_pid: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if main_pid:
            try:
                os.kill(main_pid[0], signal.SIGTERM if signum == signal.SIGTERM else signal.SIGKILL)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGUSR1, forward)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    with os.fdopen(status_fd, "w") as status:
        try:
            process = subprocess.Popen(command, start_new_session=True)
        except OSError as error:
            status.write(f"error {error.strerror}")
            return 128
        main_pid.append(process.pid)
        status.write("ok")
    while True:
        try:
            pid, code = os.waitpid(-1, 0)
        except ChildProcessError:
            return 128
        if pid == process.pid:
            break  # other pids: orphans of the container, reaped as they end
    _end_everything()
    return os.waitstatus_to_exitcode(code) if os.WIFEXITED(code) else 128 + os.WTERMSIG(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
