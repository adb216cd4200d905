"""The native spawner: a small C program (``spawner.c``, shipped with the package) that starts
and reaps an agent's plain units outside the agent's interpreter, so slots turn over without
waiting for the agent's Python (see ``pilot.agent.native.slots``).

It is compiled with the machine's C compiler (``$CC``, else ``cc``) the first time an agent
needs it, into ``$XDG_CACHE_HOME/pilot`` (default ``~/.cache/pilot``), under a name that carries
the source's digest and the machine type, so nodes of one architecture share one build and a new
version of the source builds anew. Without a compiler, or with ``PILOT_NATIVE_SPAWNER=0``, the
agent starts every unit from its slot threads, as it always can.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import shutil
import stat
import subprocess
from importlib import resources
from pathlib import Path

SPAWNER_ENV = "PILOT_NATIVE_SPAWNER"
_OFF = frozenset({"0", "off", "no", "false", "threads"})
COMPILE_SECONDS = 60


class SpawnerUnavailable(Exception):
    """The native spawner cannot be used here; the message says why."""


def enabled() -> bool:
    """False when ``PILOT_NATIVE_SPAWNER`` turns it off."""
    return os.environ.get(SPAWNER_ENV, "").strip().lower() not in _OFF


def cache_dir() -> Path:
    """Where builds are kept: ``$XDG_CACHE_HOME/pilot``, default ``~/.cache/pilot``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "pilot")


def _trusted(path: Path) -> bool:
    """An executable file of ours that nobody else may write."""
    try:
        info = path.stat()
    except OSError:
        return False
    return (stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022
            and os.access(path, os.X_OK))


def spawner_binary(directory: Path | None = None) -> str:
    """The path of a built spawner, compiling it first if this machine has no build of this
    source yet; ``SpawnerUnavailable`` naming why not."""
    source = resources.files(__name__).joinpath("spawner.c").read_bytes()
    machine = platform.machine() or "unknown"
    digest = hashlib.sha256(source + machine.encode()).hexdigest()[:16]
    folder = directory or cache_dir()
    target = folder / f"spawner-{digest}-{machine}"
    if _trusted(target):
        return str(target)
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise SpawnerUnavailable("no C compiler (cc or $CC) on PATH")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise SpawnerUnavailable(f"cannot create {folder}: {exc.strerror or exc}") from None
    lock = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # agents starting at once: one builds, the others reuse it
        if not _trusted(target):
            _build(compiler, source, folder, target)
    finally:
        os.close(lock)
    if not _trusted(target):
        raise SpawnerUnavailable(f"{target} is writable by others")
    return str(target)


def _build(compiler: str, source: bytes, folder: Path, target: Path) -> None:
    """Compile ``source`` into ``target`` (atomically, through a private build directory)."""
    work = folder / f".build-{target.name}-{os.getpid()}"
    try:
        work.mkdir(mode=0o700, exist_ok=True)
        (work / "spawner.c").write_bytes(source)
        try:
            done = subprocess.run([*compiler.split(), "-O2", "-pthread", "-o", "spawner", "spawner.c"], cwd=work,
                                  capture_output=True, timeout=COMPILE_SECONDS, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SpawnerUnavailable(f"{compiler} failed: {exc}") from None
        if done.returncode != 0:
            text = (done.stderr or done.stdout).decode(errors="replace").strip()[-500:]
            raise SpawnerUnavailable(f"{compiler} failed: {text}")
        os.chmod(work / "spawner", 0o700)  # only its owner runs it
        os.replace(work / "spawner", target)  # atomic: agents building at once all get a whole file
    except OSError as exc:
        raise SpawnerUnavailable(f"cannot build in {folder}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
