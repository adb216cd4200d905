"""Tests of the template plugin. They use the core's ``pilot_env`` fixture (an isolated store and
work directory, registered by pilot-core through ``pytest11``) and load the plugin through
``PluginManager(extra_plugins=...)``, so they pass whether or not the distribution is installed."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilot import ComputeDataService, PilotComputeService, State
from pilot.plugin.manager import PluginManager
from pilot.session import Session
from pilot.testing.fixtures import PilotEnv
from pilot_example import ExampleAdaptor, ExamplePlugin


@pytest.fixture
def plugin() -> ExamplePlugin:
    """A fresh plugin object, so counts do not leak between tests."""
    return ExamplePlugin()


@pytest.fixture
def session(pilot_env: PilotEnv, plugin: ExamplePlugin) -> Iterator[Session]:
    """A session whose plugin manager has the example plugin, on the test's store."""
    session = Session(PluginManager(extra_plugins={"example": plugin}))
    yield session
    session.close()


def test_the_example_scheme_is_registered(plugin: ExamplePlugin) -> None:
    manager = PluginManager(extra_plugins={"example": plugin})
    record = manager.adaptor_for("example")
    assert record.name == "example"
    assert isinstance(record.factory("example://localhost"), ExampleAdaptor)
    assert "fork" in manager.adaptors  # the built-ins are still there


def test_the_plugin_can_be_blocked(plugin: ExamplePlugin) -> None:
    manager = PluginManager(blocked={"example"}, extra_plugins={"example": plugin})
    assert "example" not in manager.adaptors


def test_the_entry_point_names_the_plugin() -> None:
    """When the distribution is installed, its entry point in group ``pilot`` loads ``plugin``."""
    found = [ep for ep in importlib.metadata.entry_points(group="pilot") if ep.name == "example"]
    if not found:
        pytest.skip("pilot-example is not installed (pip install -e contrib/plugin-template)")
    assert isinstance(found[0].load(), ExamplePlugin)


@pytest.mark.timeout(120)
def test_a_unit_runs_to_done_on_an_example_pilot(session: Session, plugin: ExamplePlugin,
                                                 pilot_env: PilotEnv) -> None:
    pcs = PilotComputeService(session=session)
    try:
        pilot = pcs.create_pilot({"service_url": "example://localhost", "number_of_processes": 1,
                                  "working_directory": str(pilot_env.work)})
        cds = ComputeDataService(session=session)
        cds.add_pilot_compute_service(pcs)
        unit = cds.submit_compute_unit({"executable": "/bin/echo", "arguments": ["hello", "$USER_NAME"],
                                        "environment": {"USER_NAME": "example"}})
        cds.wait(timeout=60)
        assert unit.get_state() == State.Done
        assert unit.get_exit_code() == 0
        sandbox = unit.get_local_working_directory()
        assert sandbox is not None
        assert (Path(sandbox) / "stdout.txt").read_text() == "hello example\n"
        assert pilot.get_details()["service_url"] == "example://localhost"
        assert pilot.get_state() == State.Running
    finally:
        pcs.cancel()
    assert pilot.get_state() == State.Canceled
    # The observer saw the changes this process made: the submission and the cancel.
    assert plugin.transitions[("pilot", "New", "Pending")] == 1
    assert plugin.transitions[("pilot", "Running", "Canceled")] >= 1
