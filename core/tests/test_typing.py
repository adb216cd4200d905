"""The contract between the core and its plugins is typed: no ``Any`` stands in for a store,
a session, a plugin manager, an adaptor, a data backend or a hook's answer, anywhere in the
core, the plugins or contrib (``mypy --strict`` then checks every use)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = [REPO / "core" / "src", *(REPO / "plugins").glob("*/src"), *(REPO / "contrib").glob("*/src")]
#: Names that hold project objects: ``store``, ``_store``, ``session``, ``backend``, ``adaptor`` ...
PROJECT_NAME = re.compile(r"^_?(\w+_)?(store|session|plugins|manager|backend|adaptor|hook|resources|policy)s?$")


def _is_any(annotation: ast.expr | None) -> bool:
    """``Any``, ``Any | None`` or ``Optional[Any]``."""
    if annotation is None:
        return False
    text = ast.unparse(annotation)
    return text in ("Any", "Any | None", "None | Any", "Optional[Any]", "typing.Any")


def _untyped_project_objects(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            found += [f"{node.lineno}: argument {a.arg} of {node.name}" for a in args
                      if PROJECT_NAME.match(a.arg) and _is_any(a.annotation)]
            if PROJECT_NAME.match(node.name.removeprefix("get_")) and _is_any(node.returns):
                found.append(f"{node.lineno}: {node.name}() returns Any")
            if node.name.startswith("pilot_") and _is_any(node.returns):
                found.append(f"{node.lineno}: hook {node.name}() returns Any")
        elif isinstance(node, ast.AnnAssign) and _is_any(node.annotation):
            target = node.target
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            if PROJECT_NAME.match(name):
                found.append(f"{node.lineno}: {name}")
    return [f"{path.relative_to(REPO)}:{entry}" for entry in found]


def test_there_are_sources_to_check() -> None:
    files = [p for root in SOURCES for p in root.rglob("*.py")]
    assert len(files) > 50
    assert _is_any(ast.parse("x: Any | None").body[0].annotation)  # type: ignore[attr-defined]


def test_no_any_stands_for_a_store_session_adaptor_backend_or_hook_answer() -> None:
    offenders = [entry for root in SOURCES for path in sorted(root.rglob("*.py"))
                 for entry in _untyped_project_objects(path)]
    assert offenders == [], f"{len(offenders)} project objects typed Any:\n" + "\n".join(offenders)
