"""Meta-tests that keep the documentation true to the code: every hook has a section in
docs/hooks.md and a test; every public name, description key and environment variable is
documented; the numbers and the transition table the docs quote are the code's."""

from __future__ import annotations

import ast
import inspect
import io
import re
import textwrap
import tokenize
import types
from pathlib import Path

import pytest

import pilot
from pilot import binding, compute, descriptions, service, session, states
from pilot.agent import claims, runner
from pilot.plugin import spec
from pilot.plugin.manager import PluginManager

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
TEST_ROOTS = [REPO / "core" / "tests", REPO / "plugins", REPO / "contrib", REPO / "tests"]
CODE_ROOTS = [REPO / "core" / "src", *(REPO / "plugins").glob("*/src"), *(REPO / "contrib").glob("*/src")]
ENV_NAME = re.compile(r"\bPILOT_[A-Z][A-Z0-9_]*\b")
DESCRIPTION_TYPES = [descriptions.PilotComputeDescription, descriptions.ComputeUnitDescription,
                     descriptions.PilotDataDescription, descriptions.DataUnitDescription]


def _read(name: str) -> str:
    return (DOCS / name).read_text()


def _hookspecs() -> list[str]:
    return sorted(name for name, obj in vars(spec).items()
                  if name.startswith("pilot_") and inspect.isfunction(obj) and hasattr(obj, "pilot_spec"))


def _test_sources() -> str:
    files = []
    for root in TEST_ROOTS:
        files += [p for p in root.rglob("*.py") if "test" in p.name or p.name == "conftest.py"]
    return "\n".join(p.read_text() for p in files if p.resolve() != Path(__file__).resolve())


def _pilot_names_in_code(roots: list[Path], token_type: int) -> set[str]:
    """PILOT_* names inside string literals (``tokenize.STRING``: environment variables) or used
    as identifiers (``tokenize.NAME``: Python constants such as ``PILOT_FIELDS``)."""
    found: set[str] = set()
    for root in roots:
        for path in root.rglob("*.py"):
            tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
            for token in tokens:
                if token.type == token_type:
                    found |= set(ENV_NAME.findall(token.string))
    return found


def _env_names_in_code(roots: list[Path]) -> set[str]:
    return _pilot_names_in_code(roots, tokenize.STRING)


def _env_names_in_docs() -> dict[str, set[str]]:
    return {p.name: set(ENV_NAME.findall(p.read_text())) for p in DOCS.rglob("*.md")}


def test_there_are_hooks_to_check() -> None:
    assert "pilot_place_unit" in _hookspecs()
    assert len(_hookspecs()) >= 6


@pytest.mark.parametrize("hook", _hookspecs())
def test_every_hook_has_a_section_in_the_hook_reference(hook: str) -> None:
    assert re.search(rf"^#+ .*\b{hook}\b", _read("hooks.md"), re.MULTILINE), f"docs/hooks.md: no heading for {hook}"


def test_every_hook_section_names_a_real_hook() -> None:
    headings = re.findall(r"^#+ +(pilot_\w+)", _read("hooks.md"), re.MULTILINE)
    assert set(headings) <= set(_hookspecs()), set(headings) - set(_hookspecs())


@pytest.mark.parametrize("hook", _hookspecs())
def test_every_hook_has_a_test_named_after_it(hook: str) -> None:
    where = "core/tests, plugins, contrib or tests"
    assert re.search(rf"^def test_hook_{hook}\(", _test_sources(), re.MULTILINE), f"no test_hook_{hook} under {where}"


@pytest.mark.parametrize("hook", _hookspecs())
def test_every_hook_section_documents_its_signature(hook: str) -> None:
    """A section, not a mention: the heading is followed by the hook's signature as spec.py has it."""
    text = _read("hooks.md")
    start = re.search(rf"^#+ +{hook}\b.*$", text, re.MULTILINE)
    assert start, f"docs/hooks.md: no heading for {hook}"
    following = re.search(r"^#+ ", text[start.end():], re.MULTILINE)
    section = text[start.end(): start.end() + following.start() if following else len(text)]
    params = [p for p in inspect.signature(getattr(spec, hook)).parameters]
    assert all(re.search(rf"\b{p}\b", section) for p in params), f"docs/hooks.md {hook}: parameters {params}"
    assert len(section.split()) >= 30, f"docs/hooks.md: the {hook} section is a mention, not a section"


@pytest.mark.parametrize("name", sorted(pilot.__all__))
def test_every_public_name_is_in_the_user_guide(name: str) -> None:
    assert re.search(rf"`{name}\b", _read("user-guide.md")), f"docs/user-guide.md does not mention `{name}`"


@pytest.mark.parametrize(("kind", "key"), [(t.__name__, k) for t in DESCRIPTION_TYPES
                                           for k in [*t._FIELDS, *t._ALIASES]])
def test_every_description_key_is_in_the_user_guide(kind: str, key: str) -> None:
    assert f"`{key}`" in _read("user-guide.md"), f"docs/user-guide.md does not mention {kind} key `{key}`"


def test_every_environment_variable_in_the_docs_exists_in_the_code() -> None:
    in_code = _env_names_in_code(CODE_ROOTS)
    constants = _pilot_names_in_code(CODE_ROOTS, tokenize.NAME)
    unknown = {doc: sorted(names - in_code - constants) for doc, names in _env_names_in_docs().items()
               if names - in_code - constants}
    assert not unknown, f"environment variables named in docs but used nowhere in the code: {unknown}"


def test_every_environment_variable_of_the_core_is_documented() -> None:
    in_core = _env_names_in_code([REPO / "core" / "src"])
    assert {"PILOT_HOME", "PILOT_COORDINATION_URL", "PILOT_DISABLE_PLUGINS"} <= in_core  # the scan works
    documented = set().union(*_env_names_in_docs().values())
    assert not in_core - documented, f"PILOT_* variables of core/src missing from docs/: {sorted(in_core - documented)}"


def test_quoted_defaults_match_the_code() -> None:
    guide, architecture = _read("user-guide.md"), _read("architecture.md")
    assert f"./{compute.DEFAULT_WORK_DIR}" in guide
    assert f"| `{session.DEFAULT_HEARTBEAT_TIMEOUT:g}` |" in guide
    assert f"`PLACE_EVERY = {service.PLACE_EVERY * 1000:g} ms`" in architecture
    assert f"every {runner.FLUSH_EVERY * 1000:g} ms (`FLUSH_EVERY`)" in architecture
    assert f"every {runner.FLUSH_BATCH} changes" in architecture


def test_the_quoted_prefetch_bound_and_binding_timings_are_the_code() -> None:
    architecture, hooks, guide = _read("architecture.md"), _read("hooks.md"), _read("user-guide.md")
    for name in ("PREFETCH_PER_SLOT", "PREFETCH_SECONDS", "HOLD_SECONDS"):
        assert f"`{name} = {getattr(binding, name):g}`" in architecture, name
    assert f"`PREFETCH_PER_SLOT` ({binding.PREFETCH_PER_SLOT}) units per slot" in hooks
    assert f"at most {binding.PREFETCH_PER_SLOT} units per slot" in guide
    assert f"about {binding.PREFETCH_SECONDS * 1000:g} ms" in guide
    assert f"`SERVICES_EVERY = {claims.SERVICES_EVERY:g}` s" in architecture
    assert f"`SERVICES_RECHECK = {claims.SERVICES_RECHECK:g}` s" in architecture
    assert f"`PEERS_EVERY = {claims.PEERS_EVERY:g}` s" in architecture


def test_the_transition_table_in_the_docs_is_the_code_table() -> None:
    rows = re.findall(r"^\| (pilot|unit|data_unit|pilot_data) \| (\w+) \| ([\w, ]+) \|$", _read("architecture.md"),
                      re.MULTILINE)
    documented = {(kind, old): {s.strip() for s in new.split(",")} for kind, old, new in rows}
    actual = {(kind.value, old.value): {s.value for s in new}
              for kind, table in states.TRANSITIONS.items() for old, new in table.items()}
    assert documented == actual


def _python_blocks(needle: str = "") -> list[object]:
    blocks = []
    for path in sorted(DOCS.rglob("*.md")):
        for number, match in enumerate(re.finditer(r"^ *```python\n(.*?)^ *```", path.read_text(), re.S | re.M)):
            if needle in match.group(1):
                blocks.append(pytest.param(path.name, number, match.group(1), id=f"{path.name}-{number}"))
    return blocks


@pytest.mark.parametrize(("doc", "number", "code"), _python_blocks())
def test_python_examples_in_the_docs_parse(doc: str, number: int, code: str) -> None:
    ast.parse(textwrap.dedent(code), f"{doc} block {number}")


@pytest.mark.parametrize(("doc", "number", "code"), _python_blocks("@hookimpl"))
def test_hook_examples_in_the_docs_load_as_plugins(doc: str, number: int, code: str) -> None:
    """The examples implement real hooks with the right argument names (``check_pending``)."""
    module = types.ModuleType(f"doc_example_{number}")
    exec(compile(code, f"{doc} block {number}", "exec"), module.__dict__)  # our own docs
    manager = PluginManager(entry_points=False, extra_plugins={f"doc-example-{number}": module})
    assert f"doc-example-{number}" in manager.plugin_names()
