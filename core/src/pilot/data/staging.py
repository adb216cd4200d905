"""Staging for units and pilots, on the agent side: ``input_data`` and ``file_transfer`` inputs
before a unit starts, ``output_data`` and ``file_transfer`` outputs after it ends ``Done``.

Imported only when a unit or pilot has data keys, so units without them cost nothing extra.

``file_transfer`` entries are BigJob's ``"<source> > <destination>"``:

- input: ``"<url or path> > SUBJOB_WORK_DIR"`` (unit sandbox) or ``"... > BIGJOB_WORK_DIR"``
  (pilot sandbox), optionally ``.../relative/name``; the file keeps its name unless one is given;
- output (units only, after success): ``"SUBJOB_WORK_DIR/<file or glob> > <url or path>"``; a
  destination ending in ``/`` is a directory.

``ssh://localhost/path`` and ``ssh:///path`` (BigJob's way to name a local file) are local
paths, on either side (``records.local_alias``).
"""

from __future__ import annotations

import glob
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pilot import urls
from pilot.data import records, transfer
from pilot.errors import PilotError

if TYPE_CHECKING:
    from pilot.session import Session

UNIT_DIR = "SUBJOB_WORK_DIR"
PILOT_DIR = "BIGJOB_WORK_DIR"
DATA_KEYS = ("input_data", "output_data", "file_transfer")


def parse_transfer(spec: str, *, pilot: bool = False) -> tuple[str, str, bool]:
    """``(source, destination, is_output)`` of a ``file_transfer`` entry; ``PilotError`` when it
    is malformed."""
    src, sep, dst = spec.partition(" > ")
    src, dst = src.strip(), dst.strip()
    where = "pilot" if pilot else "compute unit"
    if not sep or not src or not dst:
        raise PilotError(f"{where} file_transfer {spec!r}: expected '<source> > <destination>'", key="file_transfer")
    roots = (PILOT_DIR,) if pilot else (UNIT_DIR, PILOT_DIR)
    if _root(src) and not pilot:
        if _root(src) != UNIT_DIR:
            raise PilotError(f"file_transfer {spec!r}: outputs come from {UNIT_DIR}", key="file_transfer")
        return src, dst, True
    if _root(dst) not in roots:
        raise PilotError(f"{where} file_transfer {spec!r}: the destination must be "
                         f"{' or '.join(roots)}[/name]", key="file_transfer")
    return src, dst, False


def check_output_patterns(du_url: str, patterns: Any) -> None:
    """``output_data`` patterns name files inside the unit's sandbox: relative, no ``..``;
    ``PilotError`` naming the key otherwise."""
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        if not isinstance(pattern, str) or not pattern or os.path.isabs(pattern) \
                or ".." in pattern.replace("\\", "/").split("/"):
            raise PilotError(f"output_data {du_url}: pattern {pattern!r} must be relative to the unit's "
                             "sandbox, without '..'", key="output_data")


def _inside(base: str, path: str) -> bool:
    real = os.path.realpath(base)
    return os.path.commonpath([os.path.realpath(path), real]) == real


def _root(path: str) -> str | None:
    for root in (UNIT_DIR, PILOT_DIR):
        if path == root or path.startswith(root + "/"):
            return root
    return None


def _under(base: str, path: str) -> str:
    """``path`` (``ROOT`` or ``ROOT/rel``) resolved under ``base``; never outside it."""
    rel = path.partition("/")[2]
    full = os.path.normpath(os.path.join(base, rel)) if rel else base
    if os.path.commonpath([full, os.path.normpath(base)]) != os.path.normpath(base):
        raise PilotError(f"{path!r} leaves its sandbox")
    return full


class Stager:
    """Stages files for the units (and the pilot) of one agent; shared by its slot threads."""

    def __init__(self, session: Session, pilot_sandbox: str) -> None:
        self.session, self.pilot_sandbox = session, pilot_sandbox
        self.lock = threading.Lock()

    @staticmethod
    def needs_staging(description: Mapping[str, Any]) -> tuple[bool, bool]:
        """(stage in, stage out) for a unit description."""
        return needs_staging(description)

    def _du(self, du_url: str) -> tuple[Any, str]:
        parsed = urls.parse(du_url, "data-unit")
        return self.session.store(parsed.store_url, create=False), parsed.id

    def fetch_in(self, specs: Iterable[str], unit_sandbox: str | None) -> None:
        """Copy ``file_transfer`` inputs into the unit or pilot sandbox, verified."""
        for spec in specs:
            src, dst, output = parse_transfer(spec, pilot=unit_sandbox is None)
            if output:
                continue
            base = unit_sandbox if _root(dst) == UNIT_DIR and unit_sandbox is not None else self.pilot_sandbox
            target = _under(base, dst)
            if target == base:
                target = os.path.join(base, transfer.base_name(src))
            src = records.local_alias(src)
            try:
                path = self.session.data_backend(src).local_path(src)  # a file on this host's filesystem?
                expected = transfer.local_info(path) if path is not None else None
                transfer.get(self.session, src, target, {}, expected)
            except PilotError as exc:
                raise PilotError(f"file_transfer {spec!r}: {exc}") from None

    def stage_in(self, description: Mapping[str, Any], sandbox: str,
                 stop: Callable[[], str | None] | None = None) -> None:
        """Everything a unit needs before it starts: its DUs' files (linked when a replica is on
        this filesystem) and its ``file_transfer`` inputs. While a DU is still being stored, the
        wait ends with ``records.WaitStopped`` as soon as ``stop()`` gives a reason."""
        os.makedirs(sandbox, exist_ok=True)
        for du_url in description.get("input_data", ()):
            store, du_id = self._du(du_url)
            try:
                data = records.wait_running(store, du_id, stop)
                records.fetch(self.session, du_id, data, sandbox, link=True)
            except PilotError as exc:
                raise PilotError(f"input data unit {du_id}: {exc}") from None
        self.fetch_in(description.get("file_transfer", ()), sandbox)

    def stage_out(self, description: Mapping[str, Any], sandbox: str) -> None:
        """After success: ``output_data`` matches added to their DUs, ``file_transfer`` outputs
        copied out. Files stay in the sandbox."""
        for item in description.get("output_data", ()):
            for du_url, patterns in item.items():
                check_output_patterns(du_url, patterns)  # never follow a pattern out of the sandbox
                found = sorted({path for pattern in patterns
                                for path in glob.glob(os.path.join(glob.escape(sandbox), pattern))
                                if os.path.isfile(path) and _inside(sandbox, path)})
                if found:
                    store, du_id = self._du(du_url)
                    try:
                        records.add_files(self.session, store, du_id, found)
                    except PilotError as exc:
                        raise PilotError(f"output data unit {du_id}: {exc}") from None
        for spec in description.get("file_transfer", ()):
            src, dst, output = parse_transfer(spec)
            if not output:
                continue
            dst = records.local_alias(dst)
            matches = sorted(glob.glob(_under(sandbox, src))) if glob.has_magic(src) else [_under(sandbox, src)]
            if not matches:
                raise PilotError(f"file_transfer {spec!r}: no file matches {src}")
            for path in matches:
                target = transfer.join(dst, os.path.basename(path)) if dst.endswith("/") or len(matches) > 1 \
                    else dst
                try:
                    transfer.put(self.session, path, target, {})
                except PilotError as exc:
                    raise PilotError(f"file_transfer {spec!r}: {exc}") from None


def needs_staging(description: Mapping[str, Any]) -> tuple[bool, bool]:
    """(stage in, stage out) for a unit description (a plain dict)."""
    transfers = [parse_transfer(spec) for spec in description.get("file_transfer") or ()]
    stage_in = bool(description.get("input_data")) or any(not output for _, _, output in transfers)
    stage_out = bool(description.get("output_data")) or any(output for _, _, output in transfers)
    return stage_in, stage_out
