"""Helpers of pilot-globus's tests (FAKE Globus services, see conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pilot_globus.testing import FakeGlobus


@dataclass
class Site:
    """The fake services, its collections and the site configuration written for them."""

    fake: FakeGlobus
    a: str
    b: str
    a_root: Path
    b_root: Path
    config: Path
    token_dir: Path


def write_site(path: Path, collections: dict[str, str], *, client_id: str | None = None, extra: str = "") -> Path:
    """A site configuration naming ``collections`` ({name: uuid})."""
    lines = ["[globus]"]
    if client_id:
        lines.append(f'client_id = "{client_id}"')
    lines.append(extra)
    for name, cid in collections.items():
        lines += [f"[globus.collections.{name}]", f'id = "{cid}"']
    path.write_text("\n".join(lines) + "\n")
    return path
