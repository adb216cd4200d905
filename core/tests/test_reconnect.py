"""Reconnect by URL from other processes, and pilots whose agent dies."""

from __future__ import annotations

import json
import os
import signal
import time

from pilot import ComputeDataService, PilotCompute, PilotComputeService, State

from helpers import fork_pilot, pids_matching, run_python, wait_for


def test_pilot_outlives_the_client_and_is_canceled_from_another_process(tmp_path: object) -> None:
    out = run_python(
        "import os\n"
        "from pilot import PilotComputeService\n"
        "pcs = PilotComputeService()\n"
        "pilot = pcs.create_pilot({'service_url': 'fork://localhost', 'working_directory': os.getcwd()})\n"
        "print(pilot.get_url())\n")
    url = out.strip()
    pilot = PilotCompute(pilot_url=url)
    wait_for(lambda: pilot.get_state() == State.Running, 20, "the pilot running after its client exited")
    assert pids_matching(pilot.id)
    run_python(f"from pilot import PilotCompute\nPilotCompute(pilot_url={url!r}).cancel()\n")
    assert pilot.get_state() == State.Canceled
    assert pids_matching(pilot.id) == []


def test_unit_and_service_reconnect_from_another_process() -> None:
    pcs = PilotComputeService()
    fork_pilot(pcs, slots=2)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    first = cds.submit_compute_unit({"executable": "/bin/echo", "arguments": ["one"]})
    out = run_python(
        "import json\n"
        "from pilot import ComputeDataService, ComputeUnit\n"
        f"cds = ComputeDataService(cds_url={cds.get_url()!r})\n"
        "second = cds.submit_compute_unit({'executable': '/bin/echo', 'arguments': ['two']})\n"
        "cds.wait(timeout=60)\n"
        f"unit = ComputeUnit(cu_url={first.get_url()!r})\n"
        "print(json.dumps({'first': str(unit.get_state()), 'units': len(cds.list_compute_units()),\n"
        "                  'services': [p.get_url() for p in cds.list_pilot_compute_services()]}))\n")
    seen = json.loads(out)
    assert seen == {"first": "Done", "units": 2, "services": [pcs.get_url()]}
    assert {u.get_state() for u in cds.list_compute_units()} == {State.Done}


def test_killed_agent_fails_its_pilot_and_units_while_queued_units_move() -> None:
    pcs = PilotComputeService(heartbeat_timeout=3)
    doomed = fork_pilot(pcs, slots=1)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    running = cds.submit_compute_unit({"executable": "/bin/sleep", "arguments": ["3010"]})
    queued = cds.submit_compute_units([{"executable": "/bin/true"}] * 3)
    wait_for(lambda: running.get_state() == State.Running, 20, "unit running")
    agent_pid = doomed._record()["agent_pid"]
    os.kill(agent_pid, signal.SIGKILL)
    wait_for(lambda: doomed.get_state() == State.Failed, 10, "pilot failed")
    reason = doomed.get_details()["reason"]
    assert reason and str(agent_pid) in reason
    assert running.get_state() == State.Failed
    assert running.get_details()["reason"] == reason
    wait_for(lambda: pids_matching("sleep 3010") == [], 10, "the orphaned unit killed")
    survivor = fork_pilot(pcs, slots=1)
    cds.wait(timeout=60)
    assert {u.get_state() for u in queued} == {State.Done}
    assert {u.get_details()["pilot"] for u in queued} == {survivor.get_url()}


def test_silent_agent_fails_after_the_heartbeat_timeout() -> None:
    pcs = PilotComputeService(heartbeat_timeout=1.5)
    pilot = fork_pilot(pcs)
    agent_pid = pilot._record()["agent_pid"]
    os.kill(agent_pid, signal.SIGSTOP)
    try:
        wait_for(lambda: pilot.get_state() == State.Failed, 20, "pilot failed by heartbeat")
    finally:
        if agent_pid in pids_matching(pilot.id):  # pids are reused: only ever signal our agent
            os.kill(agent_pid, signal.SIGKILL)
    assert "heartbeat timeout" in pilot.get_details()["reason"]


def test_restartable_unit_is_run_again_after_its_pilot_died() -> None:
    pcs = PilotComputeService(heartbeat_timeout=3)
    doomed = fork_pilot(pcs, slots=1)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    unit = cds.submit_compute_unit({"executable": "/bin/sh", "restartable": True,
                                    "arguments": ["-c", "'test -e again || { touch again; sleep 3011; }'"],
                                    "working_directory": os.path.join(os.getcwd(), "shared")})
    wait_for(lambda: pids_matching("sleep 3011") and unit.get_state() == State.Running, 20, "first attempt running")
    os.kill(doomed._record()["agent_pid"], signal.SIGKILL)
    wait_for(lambda: doomed.get_state() == State.Failed, 10, "pilot failed")
    fork_pilot(pcs)
    assert unit.wait(timeout=60) == State.Done
    assert unit.get_details()["attempts"] == 1


def test_a_teardown_that_kills_units_and_agent_together_starts_nothing_new() -> None:
    """What a scheduler does on scancel: SIGTERM to the running unit and to the agent, which reach
    them a moment apart (the unit 20 ms first here). The freed slot must not start the queued
    unit meanwhile: it goes back to the service."""
    pcs = PilotComputeService()
    pilot = fork_pilot(pcs, slots=1)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    running = cds.submit_compute_unit({"executable": "echo $$ > unit.pid; exec sleep 3030"})
    wait_for(lambda: running.get_state() == State.Running, 20, "unit running")
    queued = cds.submit_compute_unit({"executable": "touch ran"})
    wait_for(lambda: queued.get_details()["pilot"] is not None, 20, "queued unit bound")
    pid_file = os.path.join(running.get_local_working_directory(), "unit.pid")
    wait_for(lambda: os.path.exists(pid_file) and open(pid_file).read().strip(), 20, "unit pid")
    unit_pid = int(open(pid_file).read())
    agent_pid = pilot._record()["agent_pid"]
    assert unit_pid in pids_matching("sleep 3030") and agent_pid in pids_matching(pilot.id)
    os.kill(unit_pid, signal.SIGTERM)
    time.sleep(0.02)
    os.kill(agent_pid, signal.SIGTERM)
    wait_for(lambda: pilot.get_state().is_final, 20, "pilot ended")
    assert pilot.get_state() == State.Failed and "SIGTERM" in pilot.get_details()["reason"]
    assert queued.get_state() == State.Pending and queued.get_details()["pilot"] is None
    pilot_sandbox = os.path.dirname(running.get_local_working_directory())
    assert not os.path.exists(os.path.join(pilot_sandbox, queued.id, "ran")), "the queued unit ran"
    cds.cancel()
