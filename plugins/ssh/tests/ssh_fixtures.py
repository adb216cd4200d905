"""Helpers of pilot-ssh's tests: what ``ssh_env`` gives a test, and the Python the sshd's user
runs the agent with."""

from __future__ import annotations

import importlib.metadata
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

from pilot.testing.services import service_missing

REMOTE_DISTRIBUTIONS = ("pilot-core", "pilot-redis")


class SSHEnv:
    """What ``ssh_env`` gives a test: the pilot URL, a shared directory, the remote user."""

    def __init__(self, sshd: dict[str, str], shared: Path, python: str, site_config: Path) -> None:
        self.user, self.port = sshd["user"], int(sshd["port"])
        self.url = f"ssh://{self.user}@127.0.0.1:{self.port}"
        self.shared, self.python, self.site_config = shared, python, site_config
        self.uid = pwd.getpwnam(self.user).pw_uid
        self.work = shared / "work"
        self.sshd = sshd

    def pilot(self, **keys: object) -> dict[str, object]:
        """A pilot description on the test sshd, sandboxes in the shared directory."""
        return {"service_url": self.url, "number_of_processes": 1, "working_directory": str(self.work), **keys}


def _closure(names: tuple[str, ...], python_version: str) -> tuple[list[importlib.metadata.Distribution], list[str]]:
    """The installed distributions among ``names`` and everything they require (no extras) on a
    Python of ``python_version``; and the requirements not installed here."""
    env = {"extra": "", "python_full_version": python_version, "python_version": python_version.rpartition(".")[0]}
    seen: dict[str, importlib.metadata.Distribution] = {}
    missing: list[str] = []
    todo = list(names)
    while todo:
        req = Requirement(todo.pop())
        key = req.name.lower().replace("_", "-")
        if key in seen or (req.marker is not None and not req.marker.evaluate(env)):
            continue
        try:
            dist = importlib.metadata.distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            if req.name not in names:  # a dependency: fetched; a distribution of ours: left out
                missing.append(f"{req.name}{req.specifier}")
            continue
        seen[key] = dist
        todo += dist.requires or []
    return list(seen.values()), missing


def build_remote_python(root: Path) -> Path:
    """A venv of the system's Python under ``root`` with pilot-core and pilot-redis (editable
    installs keep pointing at this checkout), their dependencies copied from this environment
    and the few this one lacks (such as ``async-timeout`` for a Python < 3.11.3) from the package
    index: what ``python = ...`` names in the site configuration."""
    base = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if base is None:
        service_missing("system python3", "no python3 on the remote user's PATH")
    out = subprocess.run([base, "-c", "import platform; print(platform.python_version())"],
                         capture_output=True, text=True, check=False)
    version = out.stdout.strip()
    if tuple(int(p) for p in version.split(".")[:2]) < (3, 11):
        service_missing("system python3", f"{base} is Python {version}, older than 3.11")
    subprocess.run([base, "-m", "venv", "--without-pip", str(root)], check=True)
    site = next((root / "lib").glob("python3*/site-packages"))
    dists, missing = _closure(REMOTE_DISTRIBUTIONS, version)
    for dist in dists:
        for file in dist.files or ():
            if file.parts[0] == ".." or "__pycache__" in file.parts:
                continue
            dst = site / file
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(str(dist.locate_file(file))), dst)
    if missing:
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                              *missing], capture_output=True, text=True, check=False)
        if pip.returncode != 0:
            service_missing("remote python", f"pip could not install {missing}: {pip.stderr.strip()[-300:]}")
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    return root / "bin" / "python3"
