"""k8s:// pilots against the EMULATED Kubernetes API server (``pilot_kubernetes.testing``: an
HTTP emulation on loopback, not Kubernetes; its test kubelet runs each Pod's command as a local
process and ignores the image) with the test Redis as the coordination store."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from k8s_pilot_fixtures import SERVICE_URL, K8sPilotFixtures

from pilot import ComputeDataService, PilotComputeService, State
from pilot.errors import PilotError
from pilot.testing import wait_for
from pilot_kubernetes.testing import EmulatedCluster

REPO = Path(__file__).resolve().parents[3]
START = 120.0  # seconds a pilot may take to start on a loaded 2-core machine


def core(api: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api)


def batch(api: Any) -> Any:
    from kubernetes import client

    return client.BatchV1Api(api)


def names(items: Any) -> list[str]:
    return [item.metadata.name for item in items.items]


def running(pilot: Any) -> None:
    state = wait_for(lambda: (s := pilot.get_state()) not in (State.New, State.Pending) and s, START,
                     "the pilot to start")
    assert state == State.Running, pilot.get_details()["reason"]


def final(pilot: Any) -> State:
    state: State = wait_for(lambda: (s := pilot.get_state()).is_final and s, START, "the pilot to end")
    return state


def job_name(pilot: Any) -> str:
    native_id = pilot.get_details()["native_id"]
    assert native_id, pilot.get_details()["reason"]
    return str(native_id).rpartition("/")[2]


@pytest.fixture
def frozen_agents() -> Iterator[list[int]]:
    """Pids of agents a test stopped (SIGSTOP); killed afterwards, whatever the verdict."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def freeze_agent(pilot: Any, frozen: list[int]) -> None:
    """Stop the pilot's agent (a hung agent: it neither drains nor answers SIGTERM)."""
    pid = int(pilot._record()["agent_pid"])
    os.kill(pid, signal.SIGSTOP)
    frozen.append(pid)


class TestK8sPilots(K8sPilotFixtures):
    """k8s:// pilots against the EMULATED API server, with the test Redis."""

    def test_seed_example_runs_on_k8s(self, k8s_env: Any, k8s_cluster: EmulatedCluster, redis_url: str) -> None:
        """Against the emulated API server: the seed example, unchanged except for its service URL
        (k8s://emulated/default), runs its unit Done with the test Redis as the store; the site
        configuration names the Python of the (here ignored) image."""
        seed = (REPO / "docs" / "examples" / "seed.py").read_text()
        assert "'fork://localhost'" in seed
        script = k8s_env.root / "seed_k8s.py"
        script.write_text(seed.replace("'fork://localhost'", f"'{SERVICE_URL}'"))
        site = k8s_env.root / "resources.toml"
        site.write_text(f'[resources.emulated]\nservice_url = "{SERVICE_URL}"\npython = {json.dumps(sys.executable)}\n')
        env = {**os.environ, "PILOT_SITE_CONFIG": str(site), "KUBECONFIG": str(k8s_cluster.kubeconfig),
               "PILOT_COORDINATION_URL": redis_url}
        result = subprocess.run([sys.executable, str(script)], cwd=k8s_env.root, capture_output=True, text=True,
                                timeout=300, env=env, check=False)
        assert result.returncode == 0, result.stderr
        assert "unit Done exit code 0" in result.stdout, result.stdout + result.stderr
        outputs = list((k8s_env.root / "work").glob("pilot-*/cu-*/stdout.txt"))
        assert len(outputs) == 1
        assert outputs[0].read_text().strip()  # the date

    def test_units_run_in_the_pod_with_the_store_password_from_the_secret(
            self, k8s_description: dict[str, Any], k8s_cluster: EmulatedCluster, api_client: Any) -> None:
        """Against the emulated API server: a pilot whose Pod has no other way to the Redis password
        (no credentials file, no PILOT_* variable in its base environment) reaches Running and runs
        units, so the password came through its Secret; the Secret is deleted once the agent runs."""
        pcs = PilotComputeService()
        pilot = pcs.create_pilot(k8s_description)
        running(pilot)
        cds = ComputeDataService()
        cds.add_pilot_compute_service(pcs)
        units = cds.submit_compute_units([{"executable": "/bin/echo", "arguments": ["unit", str(n)]} for n in range(4)])
        cds.wait(timeout=START)
        assert [u.get_state() for u in units] == [State.Done] * 4
        assert pilot.get_details()["slots"] == 2
        wait_for(lambda: not names(core(api_client).list_namespaced_secret("default")), START,
                 "the Secret to go once the agent runs")
        pilot.cancel()

    def test_the_secret_never_appears_in_clear_in_the_job(
            self, k8s_description: dict[str, Any], api_client: Any, redis_url: str) -> None:
        """Against the emulated API server: while the pilot waits (its Pod unschedulable), its Secret
        holds the store's password and the Job and Pod specs only name that Secret; the password
        appears nowhere in them, nor in the agent's command line; cancel deletes the Secret."""
        from pilot_redis.config import parse_url

        password = parse_url(redis_url).password
        assert password
        pilot = PilotComputeService().create_pilot({**k8s_description, "extra": {
            **k8s_description["extra"], "image": "fault/unschedulable", "unschedulable_timeout": 600}})
        name = job_name(pilot)
        wait_for(lambda: names(core(api_client).list_namespaced_pod("default")), START, "the Pod")
        secret = core(api_client).read_namespaced_secret(name, "default")
        assert base64.b64decode(secret.data["PILOT_REDIS_PASSWORD"]).decode() == password
        job = api_client.sanitize_for_serialization(batch(api_client).read_namespaced_job(name, "default"))
        pods = api_client.sanitize_for_serialization(core(api_client).list_namespaced_pod("default"))
        for text in (json.dumps(job), json.dumps(pods)):
            assert password not in text
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["envFrom"] == [{"secretRef": {"name": name}}]
        assert "--store" in container["command"]
        assert all("PASSWORD" not in item["name"] for item in container.get("env") or [])
        assert pilot.get_state() == State.Pending
        pilot.cancel()
        assert name not in names(core(api_client).list_namespaced_secret("default"))

    def test_cancel_removes_the_job_its_pods_and_the_secret(
            self, k8s_description: dict[str, Any], api_client: Any) -> None:
        """Against the emulated API server: cancel() of a pilot running a unit deletes its Job, its
        Pod (the agent and the unit's process end) and its Secret."""
        pilot = PilotComputeService().create_pilot(k8s_description)
        name = job_name(pilot)
        running(pilot)
        unit = pilot.submit_compute_unit({"executable": "/bin/sleep", "arguments": ["3281"]})
        wait_for(lambda: unit.get_state() == State.Running, START, "the unit to run")
        pod = names(core(api_client).list_namespaced_pod("default", label_selector=f"job-name={name}"))
        assert len(pod) == 1
        pilot.cancel()
        assert pilot.get_state() == State.Canceled
        assert unit.get_state() == State.Canceled
        wait_for(lambda: not names(batch(api_client).list_namespaced_job("default"))
                 and not names(core(api_client).list_namespaced_pod("default")), START, "the Job and its Pod to go")
        assert not names(core(api_client).list_namespaced_secret("default"))

    @pytest.mark.parametrize(("extra", "reason"), [
        ({"image": "fault/unschedulable", "unschedulable_timeout": 1}, "Unschedulable"),
        ({"image": "fault/image-pull"}, "ImagePullBackOff"),
        ({"image": "fault/oom"}, "OOMKilled"),
    ], ids=["unschedulable", "image-pull", "oom"])
    def test_kubernetes_failures_fail_the_pilot_with_the_kubernetes_reason(
            self, k8s_description: dict[str, Any], api_client: Any, extra: dict[str, Any], reason: str) -> None:
        """Against the emulated API server: a Pod that cannot be scheduled (past the pilot's
        unschedulable_timeout), an image that cannot be pulled and an OOM-killed container each end
        the pilot Failed with Kubernetes's reason; no Secret is left behind and no Pod runs on."""
        pilot = PilotComputeService().create_pilot({**k8s_description, "extra": {**k8s_description["extra"], **extra}})
        assert final(pilot) == State.Failed
        assert reason in (pilot.get_details()["reason"] or ""), pilot.get_details()
        wait_for(lambda: not names(core(api_client).list_namespaced_secret("default")), START, "the Secret to go")
        wait_for(lambda: not [p for p in core(api_client).list_namespaced_pod("default").items
                              if p.status.phase in ("Pending", "Running")], START, "the Pod to stop")

    @pytest.mark.parametrize("expire", [False, True], ids=["watched", "watch-expired"])
    def test_a_hung_agent_past_the_deadline_fails_the_pilot_with_deadline_exceeded(
            self, k8s_description: dict[str, Any], k8s_cluster: EmulatedCluster, api_client: Any,
            frozen_agents: list[int], expire: bool) -> None:
        """Against the emulated API server: the Job's activeDeadlineSeconds (the hard limit past the
        walltime) ends a pilot whose agent hangs: Failed with DeadlineExceeded, its Pod gone. Also
        when every watch expired meanwhile (resuming from the old resourceVersion gets 410 Gone):
        the executor lists afresh and still sees the end."""
        pilot = PilotComputeService().create_pilot({**k8s_description, "extra": {
            **k8s_description["extra"], "active_deadline_seconds": 15}})
        running(pilot)
        freeze_agent(pilot, frozen_agents)
        if expire:
            k8s_cluster.expire_watches()
        assert final(pilot) == State.Failed
        assert "DeadlineExceeded" in (pilot.get_details()["reason"] or ""), pilot.get_details()["reason"]
        wait_for(lambda: not names(core(api_client).list_namespaced_pod("default")), START, "the Pod to go")

    def test_sqlite_store_is_refused_at_create_pilot(self, k8s_env: Any, k8s_description: dict[str, Any],
                                                      api_client: Any) -> None:
        """Against the emulated API server: create_pilot with the embedded SQLite store raises a
        PilotError telling to use Redis; no pilot is stored and nothing is created in the cluster."""
        pcs = PilotComputeService(coordination_url=k8s_env.store_url)
        assert pcs.get_url().startswith("sqlite://")
        with pytest.raises(PilotError, match="Use Redis") as refused:
            pcs.create_pilot(k8s_description)
        assert refused.value.key == "coordination_url"
        assert "SQLite" in str(refused.value)
        assert pcs.list_pilots() == []
        assert not names(batch(api_client).list_namespaced_job("default"))
        assert not names(core(api_client).list_namespaced_secret("default"))

    def test_a_description_key_kubernetes_pilots_do_not_take_is_refused(self, k8s_description: dict[str, Any]) -> None:
        """Against the emulated API server: an unknown extra key, or a pilot spanning nodes, is
        refused at create_pilot naming the key (nothing is submitted)."""
        pcs = PilotComputeService()
        with pytest.raises(PilotError, match="unknown extra key 'queue_depth'"):
            pcs.create_pilot({**k8s_description, "extra": {"queue_depth": 3}})
        with pytest.raises(PilotError, match="one Pod on one node"):
            pcs.create_pilot({**k8s_description, "number_of_processes": 4, "processes_per_node": 2})
        with pytest.raises(PilotError, match="not a Kubernetes namespace name"):
            pcs.create_pilot({**k8s_description, "service_url": "k8s://emulated/Not_A_Namespace"})
        assert pcs.list_pilots() == []

    def test_the_sites_pre_commands_run_before_the_agent(
            self, k8s_env: Any, k8s_description: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
        """Against the emulated API server: a site resource for the pilot's URL gives the agent's
        Python and pre_commands; what they export reaches the units."""
        site = k8s_env.root / "resources.toml"
        site.write_text(f'[resources.emulated]\nservice_url = "{SERVICE_URL}"\npython = {json.dumps(sys.executable)}\n'
                        'pre_commands = ["export GREETING=\'from the site\'"]\n')
        monkeypatch.setenv("PILOT_SITE_CONFIG", str(site))
        pilot = PilotComputeService().create_pilot({**k8s_description, "extra": {}})
        running(pilot)
        unit = pilot.submit_compute_unit({"executable": "/bin/echo", "arguments": ["$GREETING"]})
        assert unit.wait(timeout=START) == State.Done, unit.get_details()["reason"]
        output = Path(unit.get_local_working_directory() or "/nonexistent", "stdout.txt").read_text()
        assert output == "from the site\n"
        pilot.cancel()

    def test_an_unknown_namespace_fails_the_pilot_with_the_api_servers_message(
            self, k8s_description: dict[str, Any]) -> None:
        """Against the emulated API server: a namespace that does not exist fails the pilot with the
        API server's own message."""
        pilot = PilotComputeService().create_pilot({**k8s_description, "service_url": "k8s://emulated/no-such-namespace"})
        assert pilot.get_state() == State.Failed
        assert 'namespaces "no-such-namespace" not found' in (pilot.get_details()["reason"] or "")


@pytest.mark.k8s_real
def test_a_pilot_runs_a_unit_on_a_real_cluster(pilot_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the REAL cluster of $KUBECONFIG (opt-in; skipped otherwise): a pilot on
    $PILOT_K8S_TEST_SERVICE_URL (default k8s://) with the image $PILOT_K8S_TEST_IMAGE and the
    store $PILOT_K8S_TEST_STORE (a Redis URL the cluster's Pods reach) runs a unit Done, and
    cancel ends it Canceled."""
    store, image = os.environ.get("PILOT_K8S_TEST_STORE"), os.environ.get("PILOT_K8S_TEST_IMAGE")
    if not store or not image:
        pytest.skip("k8s_real: set PILOT_K8S_TEST_STORE (a Redis URL the Pods reach) and PILOT_K8S_TEST_IMAGE")
    monkeypatch.setenv("PILOT_COORDINATION_URL", store)
    pilot = PilotComputeService().create_pilot({
        "service_url": os.environ.get("PILOT_K8S_TEST_SERVICE_URL", "k8s://"), "number_of_processes": 1,
        "working_directory": "/tmp/pilot-work", "walltime": 10, "extra": {"image": image}})
    running(pilot)
    unit = pilot.submit_compute_unit({"executable": "/bin/true"})
    assert unit.wait(timeout=START) == State.Done, unit.get_details()["reason"]
    pilot.cancel()
    assert pilot.get_state() == State.Canceled
