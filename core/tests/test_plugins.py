"""The plugin manager: built-ins are plugins, duplicates and misspelled hooks are refused,
plugins can be blocked, and an installed third-party distribution is picked up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pilot import PilotError
from pilot.builtin.fork import ForkAdaptor
from pilot.plugin import hookimpl
from pilot.plugin.manager import BUILTIN_PLUGINS, PluginManager, blocked_from_env
from pilot.plugin.types import (
    CoordinationStoreRecord,
    LaunchMethodRecord,
    PilotView,
    ResourceAdaptorRecord,
    UnitView,
)
from pilot.states import State


class _Adaptors:
    """A plugin registering an adaptor for the given schemes."""

    def __init__(self, name: str, *schemes: str) -> None:
        self.record = ResourceAdaptorRecord(name=name, schemes=schemes, factory=ForkAdaptor)

    @hookimpl
    def pilot_resource_adaptors(self) -> list[ResourceAdaptorRecord]:
        return [self.record]


def _manager(**extra: object) -> PluginManager:
    return PluginManager(entry_points=False, extra_plugins=extra)


def test_builtins_register_through_the_hooks() -> None:
    pm = _manager()
    assert set(BUILTIN_PLUGINS) <= set(pm.plugin_names())
    owners = set(pm.implementers("pilot_resource_adaptors"))
    assert "fork" in owners
    assert pm.adaptors["fork"] is pm.adaptors["local"]
    assert pm.adaptor_for("fork").name == "fork"
    assert pm.store_for("sqlite").name == "sqlite"
    assert {"fork", "mpirun"} <= set(pm.launch_methods)
    assert "placement" in pm.implementers("pilot_place_unit")
    resources = pm.agent_resources({}, 3)
    assert resources.total_slots == 3


def test_builtins_can_be_blocked_like_any_plugin() -> None:
    pm = PluginManager(blocked={"fork", "sqlite"}, entry_points=False)
    assert "fork" not in pm.plugin_names()
    assert "fork" not in pm.adaptors
    with pytest.raises(PilotError, match=r"'fork'.*installed") as info:
        pm.adaptor_for("fork")
    assert info.value.key == "service_url"
    with pytest.raises(PilotError, match="'sqlite'") as info:
        pm.store_for("sqlite")
    assert info.value.key == "coordination_url"


def test_lookup_of_an_unknown_scheme_lists_what_is_installed() -> None:
    with pytest.raises(PilotError, match=r"'slurmx'.*fork, local"):
        _manager().adaptor_for("slurmx")
    with pytest.raises(PilotError, match="'srunx'"):
        _manager().launch_method("srunx")


def test_two_plugins_claiming_one_scheme_are_refused() -> None:
    with pytest.raises(PilotError, match=r"scheme 'dup'.*'plug-a'.*'plug-b'|scheme 'dup'.*'plug-b'.*'plug-a'"):
        _manager(**{"plug-a": _Adaptors("a", "x", "dup"), "plug-b": _Adaptors("b", "dup")})


def test_a_plugin_claiming_a_builtin_scheme_is_refused() -> None:
    with pytest.raises(PilotError, match="'fork'") as info:
        _manager(mine=_Adaptors("mine", "local"))
    assert "'mine'" in str(info.value)
    assert "PILOT_DISABLE_PLUGINS" in str(info.value)


def test_duplicate_store_and_launch_method_names_are_refused() -> None:
    class Stores:
        @hookimpl
        def pilot_coordination_stores(self) -> list[CoordinationStoreRecord]:
            return [CoordinationStoreRecord(name="other", schemes=("sqlite",), open=str)]

    class Launch:
        @hookimpl
        def pilot_launch_methods(self) -> list[LaunchMethodRecord]:
            return [LaunchMethodRecord(name="mpirun", method=object())]  # type: ignore[arg-type]

    with pytest.raises(PilotError, match=r"'sqlite'.*'stores'|'stores'.*'sqlite'"):
        _manager(stores=Stores())
    with pytest.raises(PilotError, match=r"'mpirun'.*'launch2'|'launch2'.*'mpirun'"):
        _manager(launch2=Launch())


def test_disable_plugins_env_blocks_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PILOT_DISABLE_PLUGINS", " plug-b ,fork,, ")
    assert blocked_from_env() == {"plug-b", "fork"}
    pm = PluginManager(entry_points=False, extra_plugins={"plug-a": _Adaptors("a", "dup"),
                                                          "plug-b": _Adaptors("b", "dup")})
    assert pm.adaptors["dup"].name == "a"
    assert "plug-b" not in pm.plugin_names()
    assert "fork" not in pm.adaptors
    assert "local" not in pm.adaptors


def test_misspelled_hook_fails_at_load() -> None:
    class Typo:
        @hookimpl
        def pilot_resource_adaptor(self) -> list[ResourceAdaptorRecord]:
            return []

    with pytest.raises(PilotError, match=r"'typo'.*pilot_resource_adaptor"):
        _manager(typo=Typo())


def test_hook_with_wrong_arguments_fails_at_load() -> None:
    class WrongArgs:
        @hookimpl
        def pilot_place_unit(self, unit: UnitView, pilotz: Sequence[PilotView]) -> str | None:
            return None

    with pytest.raises(PilotError, match=r"(?s)'wrongargs'.*pilotz"):
        _manager(wrongargs=WrongArgs())


def test_a_placement_plugin_replaces_the_default_policy() -> None:
    unit = UnitView(id="cu-1", slots=1, datacenter=None, machine=None)
    pilots = [PilotView("pilot-small", State.Running, 2, 1, None, None),
              PilotView("pilot-big", State.Running, 8, 8, None, None)]
    assert _manager().place_unit(unit, pilots) == "pilot-big"

    class Smallest:
        @hookimpl
        def pilot_place_unit(self, unit: UnitView, pilots: Sequence[PilotView]) -> str | None:
            return min(pilots, key=lambda p: p.free).id

    assert _manager(smallest=Smallest()).place_unit(unit, pilots) == "pilot-small"


# --- a third-party distribution, built and installed for real -------------------------------
_PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "pilot-echo-testplugin"
version = "0.0.1"
dependencies = ["pilot-core"]

[project.entry-points.pilot]
echo = "pilot_echo_testplugin"

[tool.setuptools]
py-modules = ["pilot_echo_testplugin"]
"""
_MODULE = '''\
"""A resource adaptor for echo:// that runs the agent the way the fork adaptor does."""
from pilot.builtin.fork import ForkAdaptor
from pilot.plugin import hookimpl
from pilot.plugin.types import ResourceAdaptorRecord


class EchoAdaptor(ForkAdaptor):
    """fork, under another name."""


@hookimpl
def pilot_resource_adaptors():
    return [ResourceAdaptorRecord(name="echo", schemes=("echo",), factory=EchoAdaptor)]
'''
_USE_IT = textwrap.dedent("""
    import json, os
    from pilot.plugin.manager import PluginManager
    pm = PluginManager()
    out = {"plugins": pm.plugin_names(), "schemes": sorted(pm.adaptors)}
    if "echo" in pm.adaptors:
        from pilot import PilotComputeService
        pcs = PilotComputeService()
        pilot = pcs.create_pilot({"service_url": "echo://localhost", "working_directory": os.getcwd()})
        try:
            cu = pilot.submit_compute_unit({"executable": "/bin/echo", "arguments": ["hello", "from", "echo"]})
            cu.wait(timeout=60)
            out["unit"] = str(cu.get_state())
            out["stdout"] = open(os.path.join(cu.get_local_working_directory(), "stdout.txt")).read()
            out["pilot_state"] = str(pilot.get_state())
        finally:
            pilot.cancel()
    print(json.dumps(out))
""")


def _pip_install(source: Path, target: Path) -> None:
    """Build and install ``source`` into ``target`` with pip: with build isolation when an
    index is reachable, else with the setuptools (and wheel) of this environment."""
    base = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "--quiet",
            "--target", str(target)]
    errors = []
    for extra in ([], ["--no-build-isolation"]):
        done = subprocess.run([*base, *extra, str(source)], capture_output=True, text=True, timeout=300,
                              check=False)
        if done.returncode == 0:
            return
        errors.append(done.stderr[-2000:])
    pytest.fail("could not pip-install the test plugin:\n" + "\n---\n".join(errors))


@pytest.fixture
def echo_plugin(tmp_path: Path) -> Any:
    """The throw-away ``pilot-echo-testplugin`` distribution, pip-installed into a directory of
    its own (not into the shared environment, so parallel tests and workers never see it
    half-installed); yields the environment that puts it on the path. Removed afterwards."""
    import shutil

    source = tmp_path / "pilot-echo-testplugin"
    source.mkdir()
    (source / "pyproject.toml").write_text(_PYPROJECT)
    (source / "pilot_echo_testplugin.py").write_text(_MODULE)
    target = tmp_path / "site"
    _pip_install(source, target)
    assert (target / "pilot_echo_testplugin.py").exists()
    assert list(target.glob("pilot_echo_testplugin-0.0.1.dist-info/entry_points.txt"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), *filter(None, [env.get("PYTHONPATH")])])
    yield env
    shutil.rmtree(target)  # the uninstall: nothing of it is left anywhere
    shutil.rmtree(source)


@pytest.mark.timeout(300)
def test_an_installed_plugin_distribution_is_used(echo_plugin: dict[str, str], tmp_path: Path) -> None:
    def run(env: dict[str, str]) -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-c", _USE_IT], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        return result

    used = run(echo_plugin)
    assert "echo" in used["plugins"]
    assert "echo" in used["schemes"]
    assert used["unit"] == "Done"
    assert used["stdout"] == "hello from echo\n"
    assert used["pilot_state"] in ("Running", "Done")
    blocked = run({**echo_plugin, "PILOT_DISABLE_PLUGINS": "echo"})
    assert "echo" not in blocked["schemes"]
    assert "fork" in blocked["schemes"]
    # This process's environment never had it.
    assert "echo" not in PluginManager().adaptors
