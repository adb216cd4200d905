"""Starting one unit: its sandbox, its files, its argv, its process (in a process group of its
own, so cancel and walltime kill everything it started).

Slot workers call ``start_unit`` from several threads: it uses plain ``os`` calls and
``spawn`` (vfork and exec release the GIL), so starts on different slots overlap.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path
from typing import Any, Protocol

from pilot.agent.spawn import ChildProcess, spawn
from pilot.plugin.types import LaunchMethod, LaunchRequest


class GroupProcess(Protocol):
    """A unit process: started here (``spawn``) or by a node executor (``RemoteUnit``)."""

    pid: int

    def wait(self) -> int:
        """Block until it ended; its return code."""

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to its process group."""


@dataclasses.dataclass(eq=False)
class RunningUnit:
    """A unit process the agent is responsible for."""

    id: str
    proc: GroupProcess
    hosts: list[str]
    deadline: float | None = None     # monotonic time of its walltime
    kill_at: float | None = None      # monotonic time to SIGKILL after a SIGTERM
    end: tuple[str, str | None] | None = None  # (state, reason) decided by the agent, not the exit code
    silent: bool = False              # the store changed under us: record nothing more

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the unit's whole process group."""
        self.proc.signal_group(signum)

    def terminate(self, end: tuple[str, str | None] | None, grace: float = 1.0) -> None:
        """SIGTERM the group now, SIGKILL it after ``grace`` s; remember how it should end."""
        if self.kill_at is None:
            self.end = end
            self.silent = self.silent or end is None
            self.signal_group(signal.SIGTERM)
            self.kill_at = time.monotonic() + grace


class StartError(Exception):
    """A unit could not be started; ``exit_code`` mimics the shell's (126, 127) when it applies."""

    def __init__(self, reason: str, exit_code: int | None = None) -> None:
        super().__init__(reason)
        self.exit_code = exit_code


def unit_sandbox(pilot_sandbox: str, unit_id: str, description: dict[str, Any]) -> str:
    """``working_directory`` (relative ones under the pilot sandbox), else ``<pilot sandbox>/<id>``."""
    return os.path.join(pilot_sandbox, description.get("working_directory") or unit_id)


def exit_reason(returncode: int) -> tuple[int, str]:
    """Shell-style exit code and a reason for a non-zero ``returncode``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return 128 - returncode, f"killed by {name}"
    return returncode, f"exit code {returncode}"


#: description keys that make a unit's sandbox its slot's business (staging, a directory of its own)
PREPARED_ELSEWHERE = frozenset({"input_data", "output_data", "file_transfer", "working_directory"})

_WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_CLOEXEC


@dataclasses.dataclass(eq=False)
class UnitFiles:
    """A unit's sandbox and its output and error files, open (one descriptor when they are one
    file); ``made`` the sandbox directory did not exist before."""

    sandbox: str
    stdout: int
    stderr: int
    made: bool

    def close(self) -> None:
        """Close the descriptors."""
        for fd in {self.stdout, self.stderr}:
            os.close(fd)


def prepare_files(description: dict[str, Any], sandbox: str) -> UnitFiles:
    """Create the sandbox and open (truncate) the unit's output and error files; ``StartError``
    naming the sandbox when that fails."""
    made = False
    try:
        try:
            os.mkdir(sandbox)
            made = True
        except FileExistsError:
            pass
        except FileNotFoundError:
            os.makedirs(sandbox, exist_ok=True)
            made = True
        output = description.get("output", "stdout.txt")
        stdout = os.open(os.path.join(sandbox, output), _WRITE, 0o666)
    except OSError as exc:
        raise StartError(f"cannot prepare sandbox {sandbox}: {exc.strerror or exc}") from None
    error = description.get("error", "stderr.txt")
    if same_file(output, error):
        return UnitFiles(sandbox, stdout, stdout, made)  # one file: one descriptor (one offset)
    try:
        stderr = os.open(os.path.join(sandbox, error), _WRITE, 0o666)
    except OSError as exc:
        os.close(stdout)
        raise StartError(f"cannot prepare sandbox {sandbox}: {exc.strerror or exc}") from None
    return UnitFiles(sandbox, stdout, stderr, made)


def same_file(output: str, error: str) -> bool:
    """Whether a unit's ``output`` and ``error`` names are one file of its sandbox."""
    return error == output or (("/" in error or "/" in output)  # names without "/" alias only when equal
                               and os.path.normpath(error) == os.path.normpath(output))


def discard_files(files: UnitFiles, description: dict[str, Any]) -> None:
    """Undo ``prepare_files`` for a unit that will not start here: close its files, remove
    them while empty, and the sandbox when this agent made it and nothing else is in it."""
    files.close()
    for name in {description.get("output", "stdout.txt"), description.get("error", "stderr.txt")}:
        path = os.path.join(files.sandbox, name)
        try:
            if os.stat(path).st_size == 0:
                os.unlink(path)
        except OSError:
            pass
    if files.made:
        try:
            os.rmdir(files.sandbox)
        except OSError:
            pass


def start_unit(description: dict[str, Any], sandbox: str, hosts: list[str],
               method: LaunchMethod, files: UnitFiles | None = None) -> ChildProcess:
    """Start the unit's process in a new process group, in its sandbox with its files
    (``files``: made ahead by ``prepare_files``, closed here; else made here)."""
    if files is None:
        files = prepare_files(description, sandbox)
    stdout, stderr, stdin = files.stdout, files.stderr, -1
    argv: list[str] = []
    try:
        if description.get("input"):
            path = os.path.join(sandbox, description["input"])
            try:
                stdin = os.open(path, _READ)
            except OSError as exc:
                raise StartError(f"cannot open input file {path}: {exc.strerror}") from None
        line = " ".join([description["executable"], *description.get("arguments", ())])
        request = LaunchRequest(line, tuple(hosts), Path(sandbox), int(description.get("number_of_processes", 1)),
                                description.get("spmd_variation") == "mpi")
        argv = method.argv(request)
        environment = description.get("environment")
        env = {**os.environ, **environment} if environment else None
        return spawn(argv, sandbox, stdin, stdout, stderr, env=env)
    except FileNotFoundError as exc:
        _tell(stderr, f"pilot: {exc.filename or argv[:1]}: not found\n")
        raise StartError(f"cannot start unit: {exc.strerror}: {exc.filename or argv[:1]}", 127) from None
    except PermissionError as exc:
        _tell(stderr, f"pilot: {exc.filename or argv[:1]}: {exc.strerror}\n")
        raise StartError(f"cannot start unit: {exc.strerror}: {exc.filename or argv[:1]}", 126) from None
    except OSError as exc:
        _tell(stderr, f"pilot: cannot start unit: {exc}\n")
        raise StartError(f"cannot start unit: {exc}") from None
    finally:
        for fd in {stdout, stderr, stdin}:
            if fd >= 0:
                os.close(fd)


def _tell(fd: int, text: str) -> None:
    """Write why the unit did not start into its error file, as a shell would have."""
    if fd >= 0:
        try:
            os.write(fd, os.fsencode(text))
        except OSError:
            pass
