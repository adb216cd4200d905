"""``pilot new-plugin``: every kind stamps a distribution that installs, registers its scheme and
passes its own tests (the conformance suite of its kind) before anyone changes a line; names
and directories are checked; ``contrib/plugin-template`` is exactly a fresh stamp."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path, PurePosixPath

import pytest

from pilot import scaffold
from pilot.cli import main
from pilot.errors import PilotError
from pilot.plugin.manager import PluginManager
from pilot.testing.adaptor_conformance import AdaptorConformance

REPO = Path(__file__).resolve().parents[2]
CONTRIB_TEMPLATE = REPO / "contrib" / "plugin-template"
#: What a build, an install or a test run leaves in a distribution's directory (not stamped).
LEFT_BY_TOOLS = ("__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", "build", "dist")
#: What a stamped plugin may import of pilot-core: its public API, never a built-in plugin's module.
PUBLIC_MODULES = {"pilot", "pilot.errors", "pilot.states", "pilot.plugin", "pilot.plugin.types",
                  "pilot.plugin.manager", "pilot.session", "pilot.store", "pilot.commandline", "pilot.files",
                  "pilot.testing.fixtures",
                  "pilot.testing.adaptor_conformance", "pilot.testing.data_conformance",
                  "pilot.testing.store_conformance"}
REGISTERED_AS = {"adaptor": "resource adaptors", "backend": "data backends", "store": "coordination stores"}


def _venv_with_this_environment(root: Path) -> Path:
    """A throwaway virtualenv that also sees the packages of the one running this test (where
    pilot-core is installed): a ``.pth`` file adds this environment's site-packages to it, as
    ``--system-site-packages`` would for the base interpreter. Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    here = sysconfig.get_paths()["purelib"]
    Path(purelib, "pilot-test-base.pth").write_text(f"import site; site.addsitedir({here!r})\n")
    return python


def _clean_environment() -> dict[str, str]:
    """This process's environment without what would steer the stamped tests elsewhere (the
    outer run's store, blocked plugins, pytest options)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PILOT_", "PYTEST_", "PYTHONPATH"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _run(argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=_clean_environment(), capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("kind", "name"), [("adaptor", "stamped-adaptor"), ("backend", "stamped-backend"),
                                            ("store", "stamped-store")])
def test_a_stamped_plugin_installs_and_passes_its_own_tests(kind: str, name: str, tmp_path: Path) -> None:
    stamp = tmp_path / f"pilot-{name}"
    assert main(["new-plugin", name, "--kind", kind, "--dir", str(stamp)]) == 0
    python = _venv_with_this_environment(tmp_path / "venv")
    installed = _run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", str(stamp)],
                     tmp_path, 300)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    listed = _run([str(python), "-m", "pilot.cli", "plugins"], tmp_path, 120)
    assert listed.returncode == 0, listed.stderr
    lines = dict(line.split(": ", 1) for line in listed.stdout.splitlines())
    assert name in lines["plugins"].split(", ")
    assert name in lines[REGISTERED_AS[kind]].split(", ")

    tests = _run([str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x"], stamp, 840)
    summary = tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else ""
    assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-3000:]
    assert " passed" in summary and "skipped" not in summary, summary


def _files_on_disk(root: Path) -> dict[PurePosixPath, str]:
    found = {}
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if path.is_file() and not any(p in LEFT_BY_TOOLS or p.endswith(".egg-info") for p in parts):
            found[PurePosixPath(*parts)] = path.read_text(encoding="utf-8")
    return found


def test_contrib_plugin_template_is_exactly_a_fresh_stamp() -> None:
    """The committed example never drifts from what ``pilot new-plugin`` writes today."""
    fresh = scaffold.render("example", "adaptor")
    committed = _files_on_disk(CONTRIB_TEMPLATE)
    regenerate = ("regenerate it: rm -rf contrib/plugin-template && "
                  "pilot new-plugin example --kind adaptor --dir contrib/plugin-template")
    assert sorted(committed) == sorted(fresh), regenerate
    for path, text in fresh.items():
        assert committed[path] == text, f"contrib/plugin-template/{path} differs; {regenerate}"


def test_every_kind_writes_the_shared_layout() -> None:
    for kind, module in (("adaptor", "adaptor"), ("backend", "backend"), ("store", "store")):
        files = scaffold.render("my-thing", kind)
        assert set(files) == {PurePosixPath(p) for p in (
            "pyproject.toml", "README.md", "tox.ini", ".gitignore", "src/pilot_my_thing/__init__.py",
            f"src/pilot_my_thing/{module}.py", "src/pilot_my_thing/py.typed",
            "tests/test_my_thing_conformance.py")}
        assert '[project.entry-points.pilot]\nmy-thing = "pilot_my_thing"\n' in files[PurePosixPath("pyproject.toml")]
        assert 'name = "pilot-my-thing"' in files[PurePosixPath("pyproject.toml")]
        assert "mypy --strict src tests" in files[PurePosixPath("tox.ini")]
        assert not any("{{" in text for text in files.values())
        for path, text in files.items():
            if path.suffix == ".py":
                assert _pilot_imports(text) <= PUBLIC_MODULES, path


def _pilot_imports(code: str) -> set[str]:
    """The ``pilot`` modules (and ``pilot`` itself) a module imports."""
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {m for m in found if m == "pilot" or m.startswith("pilot.")}


@pytest.mark.parametrize("bad", ["Upper", "under_score", "9lives", "double--hyphen", "trailing-", "", "a b",
                                 "dot.ted", "x" * 41, "pilot-sge"])
def test_a_bad_name_is_refused_with_the_rule(bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new-plugin", bad, "--kind", "adaptor", "--dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pilot new-plugin: error: ")
    assert repr(bad) in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("taken", ["fork", "local", "sqlite", "file", "local-data", "srun", "core"])
def test_a_name_the_core_uses_is_refused(taken: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new-plugin", taken, "--kind", "backend", "--dir", str(tmp_path / "out")]) == 2
    assert f"plugin name {taken!r} is taken by pilot-core" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_existing_directory_is_refused_unless_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine\n")
    assert main(["new-plugin", "sge", "--kind", "adaptor", "--dir", str(busy)]) == 2
    assert "already exists and is not an empty directory" in capsys.readouterr().err
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["new-plugin", "sge", "--kind", "adaptor", "--dir", str(empty)]) == 0
    assert (empty / "src" / "pilot_sge" / "adaptor.py").is_file()
    assert "cd " + str(empty) in capsys.readouterr().out


def test_the_default_directory_is_pilot_name_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["new-plugin", "my-store", "--kind", "store"]) == 0
    assert (tmp_path / "pilot-my-store" / "src" / "pilot_my_store" / "store.py").is_file()


def test_an_unknown_kind_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["new-plugin", "x", "--kind", "queue"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'queue'" in capsys.readouterr().err


GUIDE = REPO / "docs" / "plugin-author-guide.md"
QUOTE = re.compile(r"^<!-- quote: (\S+) -->\n```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_the_guide_quotes_real_code() -> None:
    """Every block the guide marks as quoted (``<!-- quote: path -->``) is in that file, verbatim."""
    quotes = QUOTE.findall(GUIDE.read_text())
    assert len(quotes) >= 5
    for path, block in quotes:
        assert block in (REPO / path).read_text(), f"the guide's quote of {path} is not in it:\n{block}"


def test_the_guide_shows_what_new_plugin_prints_and_the_suites_defaults() -> None:
    guide = GUIDE.read_text()
    printed = scaffold.next_steps("sge", "adaptor", Path("pilot-sge"))
    core = scaffold.core_checkout()
    if core is not None:
        printed = printed.replace(str(core), "/path/to/pilot/core")
    assert f"$ pilot new-plugin sge --kind adaptor\n{printed}```" in guide
    for attribute, default in (("startup_timeout", 120), ("heartbeat_timeout", 10), ("end_timeout", 60),
                               ("walltime_minutes", 0.1)):
        assert getattr(AdaptorConformance, attribute) == default
        assert re.search(rf"`{attribute}`\s+\([^)]*?default {default:g}[:;)]", guide), attribute


def test_the_guide_quotes_the_error_of_a_blocked_plugin() -> None:
    with pytest.raises(PilotError) as refused:
        PluginManager(blocked={"fork"}, entry_points=False).adaptor_for("fork")
    assert f"```\n{refused.value}\n```" in GUIDE.read_text()
