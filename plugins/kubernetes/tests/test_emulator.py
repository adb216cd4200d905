"""The EMULATED Kubernetes API server and test kubelet, driven by the official ``kubernetes`` client.

These tests run against ``pilot_kubernetes.testing.EmulatedCluster`` on loopback: an emulation,
not Kubernetes (none can run here). They check that it behaves as the parts of Kubernetes the
executor and adaptor rely on do: Jobs run to Complete, deletion propagation kills processes,
Secrets reach the environment, watches resume and expire with 410, each fault image and
activeDeadlineSeconds end the way a real cluster reports them, and requests are counted.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client, watch
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from pilot_kubernetes.testing import EmulatedCluster

T = TypeVar("T")
NS = "default"


def job_body(
    name: str,
    command: list[str],
    *,
    image: str = "busybox",
    env: list[client.V1EnvVar] | None = None,
    working_dir: str | None = None,
    cpu: str | None = None,
    deadline: int | None = None,
) -> client.V1Job:
    """A one-Pod Job that runs ``command`` and is not retried."""
    container = client.V1Container(
        name="main",
        image=image,
        command=command,
        env=env,
        working_dir=working_dir,
        resources=client.V1ResourceRequirements(requests={"cpu": cpu}) if cpu else None,
    )
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(
            backoff_limit=0,
            active_deadline_seconds=deadline,
            template=client.V1PodTemplateSpec(spec=client.V1PodSpec(restart_policy="Never", containers=[container])),
        ),
    )


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 60) -> T:
    """Poll ``probe`` until it returns something truthy (generous timeout for a loaded machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def job_conditions(job: client.V1Job) -> dict[str, str]:
    """Condition type -> reason of a Job's True conditions."""
    return {c.type: c.reason for c in (job.status.conditions or []) if c.status == "True"}


def only_pod(core: client.CoreV1Api, job: str) -> client.V1Pod | None:
    """The Pod of Job ``job`` found by its ``job-name`` label, or None."""
    pods = core.list_namespaced_pod(NS, label_selector=f"job-name={job}").items
    return pods[0] if len(pods) == 1 else None


def running_pid(core: client.CoreV1Api, job: str) -> int | None:
    """The pid of the Job's running container (the emulator's containerID is emulated://<pid>)."""
    pod = only_pod(core, job)
    if pod is None or pod.status.phase != "Running":
        return None
    return int(pod.status.container_statuses[0].container_id.removeprefix("emulated://"))


def process_gone(pid: int) -> bool:
    """True once no process has id ``pid`` (the kubelet reaps its children)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def batch(kube_api: ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(kube_api)


@pytest.fixture
def core(kube_api: ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(kube_api)


def test_job_runs_to_complete_with_env_and_secret(
    batch: client.BatchV1Api, core: client.CoreV1Api, tmp_path: Path
) -> None:
    """A Job's command runs in its workingDir with its env (a Secret's key included) and the
    watch sees the Job reach Complete; its Pod carries the job-name label and ends Succeeded."""
    core.create_namespaced_secret(
        NS, client.V1Secret(metadata=client.V1ObjectMeta(name="creds"), string_data={"password": "s3cret"})
    )
    env = [
        client.V1EnvVar(name="GREETING", value="hello"),
        client.V1EnvVar(
            name="PASSWORD",
            value_from=client.V1EnvVarSource(secret_key_ref=client.V1SecretKeySelector(name="creds", key="password")),
        ),
    ]
    body = job_body("hello", ["sh", "-c", 'echo "$GREETING $PASSWORD" > out.txt'], env=env, working_dir=str(tmp_path))
    created = batch.create_namespaced_job(NS, body)
    seen: list[dict[str, str]] = []
    stream = watch.Watch()
    for event in stream.stream(
        batch.list_namespaced_job, NS, resource_version=created.metadata.resource_version, timeout_seconds=120
    ):
        seen.append(job_conditions(event["object"]))
        if "Complete" in seen[-1]:
            stream.stop()
    assert seen[-1].get("Complete") == "CompletionsReached"
    assert (tmp_path / "out.txt").read_text() == "hello s3cret\n"
    pod = only_pod(core, "hello")
    assert pod is not None and pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.reason, terminated.exit_code) == ("Completed", 0)
    assert pod.metadata.labels["controller-uid"] == created.metadata.uid
    assert batch.read_namespaced_job("hello", NS).status.succeeded == 1


def test_secret_round_trip_and_missing_secret(batch: client.BatchV1Api, core: client.CoreV1Api) -> None:
    """Secrets store stringData as base64 data; a Pod whose env names a missing Secret waits
    in CreateContainerConfigError; deleting the Secret makes it 404."""
    core.create_namespaced_secret(
        NS, client.V1Secret(metadata=client.V1ObjectMeta(name="tok"), string_data={"token": "abc"})
    )
    assert core.read_namespaced_secret("tok", NS).data == {"token": "YWJj"}
    core.delete_namespaced_secret("tok", NS)
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_secret("tok", NS)
    assert missing.value.status == 404
    ref = client.V1EnvVarSource(secret_key_ref=client.V1SecretKeySelector(name="tok", key="token"))
    batch.create_namespaced_job(NS, job_body("nosecret", ["true"], env=[client.V1EnvVar(name="T", value_from=ref)]))

    def waiting() -> Any:
        pod = only_pod(core, "nosecret")
        statuses = pod.status.container_statuses if pod else None
        return statuses and statuses[0].state.waiting

    state = wait_for(waiting, "CreateContainerConfigError")
    assert (state.reason, state.message) == ("CreateContainerConfigError", 'secret "tok" not found')


@pytest.mark.parametrize("policy", ["Background", "Foreground"])
def test_delete_with_propagation_removes_pods_and_kills_process(
    batch: client.BatchV1Api, core: client.CoreV1Api, policy: str
) -> None:
    """Deleting a running Job with propagationPolicy removes its Pod and kills its process."""
    batch.create_namespaced_job(NS, job_body("sleeper", ["sleep", "300"]))
    pid = wait_for(lambda: running_pid(core, "sleeper"), "the pod to run")
    batch.delete_namespaced_job("sleeper", NS, body=client.V1DeleteOptions(propagation_policy=policy))
    wait_for(lambda: not core.list_namespaced_pod(NS).items, "the pod to go")
    wait_for(lambda: not batch.list_namespaced_job(NS).items, "the job to go")
    assert process_gone(pid)


def test_delete_without_policy_orphans_pods_like_batch_v1(batch: client.BatchV1Api, core: client.CoreV1Api) -> None:
    """Without a propagationPolicy a Job's Pods are orphaned (batch/v1's default) and keep running."""
    batch.create_namespaced_job(NS, job_body("orphan", ["sleep", "300"]))
    pid = wait_for(lambda: running_pid(core, "orphan"), "the pod to run")
    batch.delete_namespaced_job("orphan", NS)
    pod = only_pod(core, "orphan")
    assert pod is not None and not pod.metadata.owner_references
    assert not process_gone(pid)
    core.delete_namespaced_pod(pod.metadata.name, NS, grace_period_seconds=0)
    wait_for(lambda: process_gone(pid), "the orphan's process to be killed")


def test_failing_command_fails_the_job(batch: client.BatchV1Api, core: client.CoreV1Api) -> None:
    """A non-zero exit fails the Pod (Error, the exit code) and, with backoffLimit 0, the Job."""
    batch.create_namespaced_job(NS, job_body("fails", ["sh", "-c", "exit 3"]))
    job = wait_for(
        lambda: (j := batch.read_namespaced_job("fails", NS)) and "Failed" in job_conditions(j) and j, "the job to fail"
    )
    assert job_conditions(job)["Failed"] == "BackoffLimitExceeded"
    pod = only_pod(core, "fails")
    assert pod is not None and pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.reason, terminated.exit_code) == ("Error", 3)


def test_watch_resumes_then_gets_410_after_expiry(batch: client.BatchV1Api, kube_cluster: EmulatedCluster) -> None:
    """A watch resumed from a listed resourceVersion sees later events; expire_watches() ends
    open watches, and resuming from an old version then fails with 410 until a fresh list."""
    listed = batch.list_namespaced_job(NS)
    old_version = listed.metadata.resource_version
    batch.create_namespaced_job(NS, job_body("w1", ["true"]))
    events = watch.Watch().stream(batch.list_namespaced_job, NS, resource_version=old_version, timeout_seconds=120)
    first = next(events)
    assert (first["type"], first["object"].metadata.name) == ("ADDED", "w1")
    kube_cluster.expire_watches()
    rest = list(events)  # the open watch ends (before its 120 s timeout)
    assert all(event["type"] != "ERROR" for event in rest)
    with pytest.raises(ApiException) as gone:
        list(watch.Watch().stream(batch.list_namespaced_job, NS, resource_version=old_version, timeout_seconds=5))
    assert gone.value.status == 410
    fresh = batch.list_namespaced_job(NS).metadata.resource_version
    batch.create_namespaced_job(NS, job_body("w2", ["true"]))
    resumed = next(watch.Watch().stream(batch.list_namespaced_job, NS, resource_version=fresh, timeout_seconds=120))
    assert resumed["object"].metadata.name == "w2"


def test_watch_filters_by_label_selector(batch: client.BatchV1Api, core: client.CoreV1Api) -> None:
    """A Pod watch with labelSelector job-name=<job> sees only that Job's Pod."""
    version = core.list_namespaced_pod(NS).metadata.resource_version
    batch.create_namespaced_job(NS, job_body("noise", ["true"]))
    batch.create_namespaced_job(NS, job_body("signal", ["true"]))
    stream = watch.Watch()
    names = set()
    for event in stream.stream(
        core.list_namespaced_pod, NS, label_selector="job-name=signal", resource_version=version, timeout_seconds=120
    ):
        names.add(event["object"].metadata.labels["job-name"])
        if event["object"].status.phase == "Succeeded":
            stream.stop()
    assert names == {"signal"}


@pytest.mark.parametrize(
    ("image", "cpu", "fragment"),
    [
        ("fault/unschedulable", None, "didn't match Pod's node affinity/selector"),
        ("busybox", "9", "Insufficient cpu"),
    ],
)
def test_unschedulable_pods_stay_pending(
    batch: client.BatchV1Api, core: client.CoreV1Api, tmp_path: Path, image: str, cpu: str | None, fragment: str
) -> None:
    """fault/unschedulable, or a cpu request above the node's 8 CPUs, leaves the Pod Pending
    with PodScheduled=False reason Unschedulable, and its command never runs."""
    batch.create_namespaced_job(NS, job_body("unsched", ["touch", str(tmp_path / "ran")], image=image, cpu=cpu))

    def unscheduled() -> Any:
        pod = only_pod(core, "unsched")
        conditions = [c for c in (pod.status.conditions or []) if c.type == "PodScheduled"] if pod else []
        return conditions and conditions[0].status == "False" and conditions[0]

    condition = wait_for(unscheduled, "PodScheduled=False")
    assert condition.reason == "Unschedulable" and fragment in condition.message
    pod = only_pod(core, "unsched")
    assert pod is not None and pod.status.phase == "Pending"
    assert not (tmp_path / "ran").exists()


def test_image_pull_fault_backs_off_and_never_runs(
    batch: client.BatchV1Api, core: client.CoreV1Api, tmp_path: Path
) -> None:
    """fault/image-pull: ErrImagePull, then ImagePullBackOff; the Pod stays Pending, nothing runs."""
    batch.create_namespaced_job(NS, job_body("pull", ["touch", str(tmp_path / "ran")], image="fault/image-pull"))
    reasons: set[str] = set()

    def backed_off() -> bool:
        pod = only_pod(core, "pull")
        if pod and pod.status.container_statuses:
            reasons.add(pod.status.container_statuses[0].state.waiting.reason)
        return "ImagePullBackOff" in reasons

    wait_for(backed_off, "ImagePullBackOff")
    pod = only_pod(core, "pull")
    assert pod is not None and pod.status.phase == "Pending"
    assert "fault/image-pull" in pod.status.container_statuses[0].state.waiting.message
    assert not (tmp_path / "ran").exists()


def test_oom_fault_kills_the_process(batch: client.BatchV1Api, core: client.CoreV1Api) -> None:
    """fault/oom: the command runs, then is killed and reported OOMKilled with exit 137."""
    batch.create_namespaced_job(NS, job_body("oom", ["sleep", "300"], image="fault/oom"))
    job = wait_for(
        lambda: (j := batch.read_namespaced_job("oom", NS)) and "Failed" in job_conditions(j) and j, "the job to fail"
    )
    assert job_conditions(job)["Failed"] == "BackoffLimitExceeded"
    pod = only_pod(core, "oom")
    assert pod is not None and pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.reason, terminated.exit_code) == ("OOMKilled", 137)


def test_active_deadline_fails_the_job_and_kills_the_pod(batch: client.BatchV1Api, core: client.CoreV1Api) -> None:
    """activeDeadlineSeconds: the Job fails with DeadlineExceeded and its Pod's process is killed."""
    batch.create_namespaced_job(NS, job_body("late", ["sleep", "300"], deadline=1))
    pid = wait_for(lambda: running_pid(core, "late"), "the pod to run")
    job = wait_for(
        lambda: (j := batch.read_namespaced_job("late", NS)) and "Failed" in job_conditions(j) and j, "the deadline"
    )
    assert job_conditions(job)["Failed"] == "DeadlineExceeded"
    assert job.status.failed == 1
    wait_for(lambda: process_gone(pid), "the pod's process to be killed")
    wait_for(lambda: not core.list_namespaced_pod(NS).items, "the pod to go")


def test_request_count_counts_each_api_request(kube_cluster: EmulatedCluster, core: client.CoreV1Api) -> None:
    """request_count() grows by exactly the requests a client makes."""
    before = kube_cluster.request_count()
    for _ in range(3):
        core.list_namespaced_pod(NS)
    assert kube_cluster.request_count() == before + 3


def test_api_errors_and_auth(kube_cluster: EmulatedCluster, batch: client.BatchV1Api) -> None:
    """Errors come as the real server's statuses: 409 on a taken name, 404 in an unknown
    namespace, 422 for an invalid Job, 401 without the kubeconfig's token; the ``other``
    context works in namespace ``other``."""
    batch.create_namespaced_job(NS, job_body("dup", ["true"]))
    with pytest.raises(ApiException) as taken:
        batch.create_namespaced_job(NS, job_body("dup", ["true"]))
    assert taken.value.status == 409
    assert json.loads(taken.value.body)["message"] == 'jobs.batch "dup" already exists'
    with pytest.raises(ApiException) as nowhere:
        batch.create_namespaced_job("nowhere", job_body("j", ["true"]))
    assert nowhere.value.status == 404
    bad = job_body("bad", ["true"])
    bad.spec.template.spec.restart_policy = "Always"
    with pytest.raises(ApiException) as invalid:
        batch.create_namespaced_job(NS, bad)
    assert invalid.value.status == 422
    anonymous = client.Configuration()
    anonymous.host = kube_cluster.server_url
    with pytest.raises(ApiException) as unauthorized:
        client.BatchV1Api(client.ApiClient(anonymous)).list_namespaced_job(NS)
    assert unauthorized.value.status == 401
    from kubernetes import config

    other = config.new_client_from_config(str(kube_cluster.kubeconfig), context="other")
    client.BatchV1Api(other).create_namespaced_job("other", job_body("elsewhere", ["true"]))
    assert [j.metadata.name for j in batch.list_job_for_all_namespaces().items] == ["dup", "elsewhere"]
