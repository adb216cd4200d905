"""Starting a unit's process with as little Python per start as the interpreter allows.

``subprocess.Popen`` spends about 40 µs of Python per start on set-up the agent does not need
(pipes for ``communicate``, handle bookkeeping, locks). On the CPython versions whose private
``_posixsubprocess.fork_exec`` signature is known (3.11 to 3.13) the agent calls it directly, with
the same arguments ``Popen`` would pass, and reads exec errors from the same error pipe; on any
other interpreter, or if that call's signature turns out different, it uses ``Popen``.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

try:  # CPython on POSIX; anything else starts units through Popen
    import _posixsubprocess
except ImportError:  # pragma: no cover - not CPython
    _posixsubprocess = None  # type: ignore[assignment]

_DIRECT = [_posixsubprocess is not None and (3, 11) <= sys.version_info[:2] <= (3, 13)]


class _SignatureChanged(Exception):
    """``_posixsubprocess.fork_exec`` refused the arguments ``Popen`` of 3.11-3.13 passes."""


class ChildProcess:
    """A started unit process, leader of its own process group; reaped by ``wait()``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def wait(self) -> int:
        """Block until it ended; its return code (negative: killed by that signal)."""
        if self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
            except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): no status to read
                self.returncode = 0
        return self.returncode

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to its process group while it has not been reaped."""
        if self.returncode is None:
            try:
                os.killpg(self.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass


class PopenChild(ChildProcess):
    """A unit process started by ``Popen``, which reaps it (so ``subprocess`` never reaps it
    behind our back)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        super().__init__(popen.pid)
        self.popen = popen

    def wait(self) -> int:
        """Block until it ended; its return code (negative: killed by that signal)."""
        if self.returncode is None:
            self.returncode = self.popen.wait()
        return self.returncode


def spawn(argv: Sequence[str], cwd: str, stdin: int, stdout: int, stderr: int, *,
          env: Mapping[str, str] | None) -> ChildProcess:
    """Start ``argv`` in ``cwd`` in a new process group with the given descriptors (``stdin``
    -1: /dev/null). Raises ``OSError`` (``FileNotFoundError``, ``PermissionError``...) as
    ``Popen`` does when the program cannot be started."""
    try:
        return _spawn(argv, cwd, stdin, stdout, stderr, env=env)
    except OSError as exc:
        if exc.errno != errno.ENOEXEC:
            raise
    # a file without a "#!" line (Exec format error): run it as /bin/sh would, as a shell script
    return _spawn(["/bin/sh", _script_path(argv[0], cwd, env), *argv[1:]], cwd, stdin, stdout, stderr, env=env)


def _spawn(argv: Sequence[str], cwd: str, stdin: int, stdout: int, stderr: int, *,
           env: Mapping[str, str] | None) -> ChildProcess:
    if _DIRECT[0]:
        try:
            return ChildProcess(_fork_exec(argv, cwd, stdin, stdout, stderr, env=env))
        except _SignatureChanged:  # this interpreter's private signature differs: Popen from now on
            _DIRECT[0] = False
    return PopenChild(subprocess.Popen(argv, cwd=cwd, stdin=stdin if stdin >= 0 else subprocess.DEVNULL,
                                       stdout=stdout, stderr=stderr, env=env, process_group=0))


def _script_path(program: str, cwd: str, env: Mapping[str, str] | None) -> str:
    """The file ``program`` named when exec found it (``PATH`` searched as exec does)."""
    if os.path.dirname(program):
        return program  # relative names stay relative to ``cwd``, where the shell runs
    for directory in os.get_exec_path(env):
        path = os.path.join(cwd, directory, program)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return os.path.join(directory, program)
    return program


_devnull: list[int] = []


def _stdin(fd: int) -> int:
    if fd >= 0:
        return fd
    if not _devnull:
        _devnull.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    return _devnull[0]


def _fork_exec(argv: Sequence[str], cwd: str, stdin: int, stdout: int, stderr: int, *,
               env: Mapping[str, str] | None) -> int:
    """What ``Popen._execute_child`` does for these arguments, minus its bookkeeping."""
    env_list = None
    if env is not None:
        env_list = []
        for key, value in env.items():
            name = os.fsencode(key)
            if b"=" in name:
                raise ValueError(f"illegal environment variable name {key!r}")
            env_list.append(name + b"=" + os.fsencode(value))
    program = os.fsencode(argv[0])
    if os.path.dirname(program):
        candidates: tuple[bytes, ...] = (program,)
    else:
        candidates = tuple(os.path.join(os.fsencode(d), program) for d in os.get_exec_path(env))
    errpipe_read, errpipe_write = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            args: list[Any] = [
                [os.fsencode(a) for a in argv], candidates, True, (errpipe_write,), cwd, env_list,
                _stdin(stdin), -1, -1, stdout, -1, stderr, errpipe_read, errpipe_write,
                True, False, 0, None, None, None, -1, None, True]
            try:
                pid = _posixsubprocess.fork_exec(*args)
            except TypeError as exc:  # nothing was started
                raise _SignatureChanged from exc
        finally:
            os.close(errpipe_write)
        failure = b""
        while True:  # empty at once when exec succeeded (the pipe closes on exec)
            part = os.read(errpipe_read, 50_000)
            if not part:
                break
            failure += part
    finally:
        os.close(errpipe_read)
    if failure:
        os.waitpid(pid, 0)  # the child exits at once: reap it
        raise _child_error(failure, argv[0], cwd)
    return pid


def _child_error(data: bytes, program: str, cwd: str) -> Exception:
    """The exception ``Popen`` would raise for what the child wrote to the error pipe."""
    try:
        name, hex_errno, message = data.split(b":", 2)
        errno = int(hex_errno, 16)
    except ValueError:
        return OSError(f"cannot start {program}: {data!r}")
    text = message.decode(errors="replace")
    if name != b"OSError" or not errno:
        return OSError(f"cannot start {program}: {text or name.decode(errors='replace')}")
    return OSError(errno, os.strerror(errno), cwd if text == "noexec" else program)  # noexec: chdir failed
