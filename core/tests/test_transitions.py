"""One authority for states: every state change goes through ``pilot.transitions``, along the
table's edges, and observers (client side and agent side) hear each change once, after it was
written, with the state the object really left."""

from __future__ import annotations

import ast
import itertools
import json
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from pilot import ComputeDataService, PilotComputeService, PilotDataService, State
from pilot.session import Session
from pilot.states import FINAL_STATES, Kind, is_legal
from pilot.testing.fixtures import PilotEnv
from pilot.testing.records import pilot_record, unit_record
from pilot.transitions import UnitChange, change_units, transition

from helpers import wait_for

CORE = Path(__file__).resolve().parents[1] / "src" / "pilot"
RECORDER = """
import json, os
from pilot.plugin import hookimpl

@hookimpl
def pilot_state_changed(kind, entity_id, old, new):
    line = json.dumps([str(kind), entity_id, str(old), str(new), os.getpid()])
    with open(os.environ["RECORDER_LOG"], "a") as log:
        log.write(line + "\\n")
"""


@pytest.fixture
def recorded(pilot_env: PilotEnv, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state recorder installed as an entry-point plugin (a dist-info on PYTHONPATH), so the
    agents load it as well as this process; returns its log."""
    site = pilot_env.root / "site"
    (site / "recorder_plugin-0.dist-info").mkdir(parents=True)
    (site / "recorder_plugin.py").write_text(RECORDER)
    (site / "recorder_plugin-0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: recorder-plugin\n"
                                                                   "Version: 0\n")
    (site / "recorder_plugin-0.dist-info" / "entry_points.txt").write_text("[pilot]\nrecorder = recorder_plugin\n")
    log = pilot_env.root / "transitions.jsonl"
    monkeypatch.setenv("RECORDER_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", f"{site}:{__import__('os').environ.get('PYTHONPATH', '')}")
    monkeypatch.syspath_prepend(str(site))
    return log


def test_every_transition_of_a_run_is_heard_once_and_is_legal(recorded: Path, pilot_env: PilotEnv) -> None:
    session = Session()
    assert "recorder" in session.plugins.plugin_names()
    pcs = PilotComputeService(session=session)
    pilot = pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 2,
                              "working_directory": str(pilot_env.work)})
    cds = ComputeDataService(session=session)
    cds.add_pilot_compute_service(pcs)
    data = pilot_env.root / "in.txt"
    data.write_text("x")
    pd = PilotDataService(session=session).create_pilot({"service_url": str(pilot_env.root / "pd")})
    du = pd.submit_data_unit({"file_urls": [str(data)]})
    du.wait(timeout=30)
    units = cds.submit_compute_units([
        *[{"executable": "/bin/true"}] * 30, {"executable": "/bin/false"},
        {"executable": "/bin/sleep", "arguments": ["3041"]},
        {"executable": "/bin/cat", "arguments": ["in.txt"], "input_data": [du.get_url()]}])
    wait_for(lambda: units[-2].get_state() == State.Running, 30, "the sleeper running")
    queued = pilot.submit_compute_unit({"executable": "/bin/true"})
    units[-2].cancel()
    cds.wait(timeout=60)
    du.cancel()
    pilot.cancel()
    wait_for(lambda: "Canceled" in recorded.read_text() and pilot.get_state() == State.Canceled, 20, "the end")
    final = {unit.id: unit.get_state() for unit in [*units, queued]}
    session.close()

    heard = [json.loads(line) for line in recorded.read_text().splitlines()]
    by_entity: dict[str, list[tuple[str, str]]] = defaultdict(list)
    agents = set()
    for kind, entity, old, new, pid in heard:
        assert is_legal(Kind(kind), State(old), State(new)), f"{kind} {entity}: {old} -> {new} is not in the table"
        by_entity[entity].append((old, new))
        if pid != __import__("os").getpid():
            agents.add(pid)
    assert agents, "no transition was heard in the agent"
    starts = {"pilot": "New", "unit": "Pending", "data_unit": "New"}
    for unit in [*units, queued]:
        chain = by_entity[unit.id]
        assert chain, f"nothing heard of {unit.id}"
        assert chain[0][0] == starts["unit"]
        for (_, new), (old, _) in itertools.pairwise(chain):
            assert old == new, f"{unit.id}: heard {chain}: each change leaves the state the last one entered"
        assert State(chain[-1][1]) in FINAL_STATES and chain[-1][1] == final[unit.id]
    for entity, kind in ((pilot.id, "pilot"), (du.id, "data_unit")):
        chain = by_entity[entity]
        assert chain[0][0] == starts[kind], chain
        assert all(old == new for (_, new), (old, _) in itertools.pairwise(chain)), chain
    assert by_entity[pilot.id][-1][1] == "Canceled"
    assert by_entity[units[-2].id][-1] == ("Running", "Canceled")
    assert by_entity[units[-3].id][-1][1] == "Failed"


def test_a_rejected_write_is_not_heard(pilot_env: PilotEnv) -> None:
    heard: list[tuple[str, State, State]] = []

    class Ear:
        @staticmethod
        def pilot_state_changed(kind: Kind, entity_id: str, old: State, new: State) -> None:
            heard.append((entity_id, old, new))

    from pilot.plugin import hookimpl
    from pilot.plugin.manager import PluginManager

    Ear.pilot_state_changed = hookimpl(Ear.pilot_state_changed)  # type: ignore[method-assign]
    session = Session(PluginManager(extra_plugins={"ear": Ear()}))
    store = session.store(pilot_env.store_url)
    store.insert_units([unit_record("cu-1"), unit_record("cu-2", state=State.Done), unit_record("cu-3")])
    store.insert_pilot(pilot_record("pilot-1"))
    left = change_units(store, [UnitChange("cu-1", State.Running), UnitChange("cu-2", State.Running),
                                UnitChange("cu-3", State.Done, only_from=(State.Running,))], session)
    assert left == {"cu-1": State.Pending}
    assert transition(store, Kind.pilot, ["pilot-1", "pilot-missing"], State.Running, {"slots": 3},
                      session=session) == {"pilot-1": State.New}
    assert transition(store, Kind.pilot, ["pilot-1"], State.Pending, session=session) == {}
    assert heard == [("cu-1", State.Pending, State.Running), ("pilot-1", State.New, State.Running)]
    assert store.get_pilots(["pilot-1"])[0]["slots"] == 3
    session.close()


def _state_writes(tree: ast.AST) -> list[int]:
    """Lines that call a store's update method with a ``"state"`` key written out."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "update_units", "update_pilot", "update_service", "UnitUpdate"):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "state"
                                                     for k in sub.keys):
                    lines.append(node.lineno)
    return lines


def test_no_module_but_transitions_writes_a_state() -> None:
    offenders = {}
    for path in sorted(CORE.rglob("*.py")):
        if path.name == "transitions.py" or "testing" in path.parts or path.parent.name == "store":
            continue
        lines = _state_writes(ast.parse(path.read_text()))
        if lines:
            offenders[str(path.relative_to(CORE))] = lines
    assert _state_writes(ast.parse('s.update_units([UnitUpdate("u", {"state": "Done"})])'))  # the scan works
    assert not offenders, f"state written outside pilot.transitions: {offenders}"


def test_the_redis_lua_state_sets_come_from_the_states_module() -> None:
    scripts = pytest.importorskip("pilot_redis.scripts")
    from pilot.states import ACTIVE_UNIT_STATES, QUEUED_UNIT_STATES, lua_set

    source = " ".join(getattr(scripts, name) for name in dir(scripts) if name.isupper() and
                      isinstance(getattr(scripts, name), str))
    assert lua_set("ACTIVE", ACTIVE_UNIT_STATES) in source
    assert lua_set("QUEUED", QUEUED_UNIT_STATES) in source
    assert "Staging=true" not in Path(scripts.__file__).read_text(), "state names written by hand"
    del sys.modules["pilot_redis.scripts"]
