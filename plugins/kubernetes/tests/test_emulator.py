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
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from kubernetes import client, config, watch
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from pilot_kubernetes.testing import EmulatedCluster

T = TypeVar("T")
NS = "default"
Raw = dict[str, Any]


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


def process_gone(pid: int) -> bool:
    """True once no process has id ``pid`` (the kubelet reaps its children)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class Kube:
    """The official client on the emulated cluster, answers as wire-format dicts (camelCase)."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)

    def raw(self, obj: object) -> Raw:
        """An API object as the JSON the server sent."""
        return cast(Raw, self.api.sanitize_for_serialization(obj))  # type: ignore[no-untyped-call]

    def job(self, name: str) -> Raw:
        return self.raw(self.batch.read_namespaced_job(name, NS))

    def pods(self, job: str | None = None) -> list[Raw]:
        """Pods of Job ``job`` (found by its ``job-name`` label), or every Pod of the namespace."""
        selector = f"job-name={job}" if job else None
        return cast(list[Raw], self.raw(self.core.list_namespaced_pod(NS, label_selector=selector))["items"])

    def only_pod(self, job: str) -> Raw | None:
        pods = self.pods(job)
        return pods[0] if len(pods) == 1 else None

    def container(self, job: str) -> Raw:
        """The first container status of the Job's Pod ({} before there is one)."""
        pod = self.only_pod(job)
        statuses = pod["status"].get("containerStatuses") if pod else None
        return cast(Raw, statuses[0]) if statuses else {}

    def running_pid(self, job: str) -> int | None:
        """The pid of the Job's running container (the emulator's containerID is emulated://<pid>)."""
        container = self.container(job)
        if "running" not in container.get("state", {}):
            return None
        return int(str(container["containerID"]).removeprefix("emulated://"))

    def ended(self, job: str) -> Raw | None:
        """The Job once it has a Complete or Failed condition."""
        found = self.job(job)
        return found if job_conditions(found).keys() & {"Complete", "Failed"} else None

    def version(self, listed: object) -> str:
        return str(self.raw(listed)["metadata"]["resourceVersion"])

    def watch(self, func: Callable[..., object], **kwargs: object) -> Iterator[Raw]:
        """A watch through ``kubernetes.watch.Watch``: each event as {"type", "object": raw}."""
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        for event in stream.stream(func, NS, **kwargs):  # type: ignore[no-untyped-call]
            yield {"type": event["type"], "object": event["raw_object"]}


def job_conditions(job: Raw) -> dict[str, str]:
    """Condition type -> reason of a Job's True conditions."""
    return {
        c["type"]: c.get("reason", "") for c in job.get("status", {}).get("conditions", []) if c["status"] == "True"
    }


@pytest.fixture
def kube(kube_api: ApiClient) -> Kube:
    return Kube(kube_api)


def test_job_runs_to_complete_with_env_and_secret(kube: Kube, tmp_path: Path) -> None:
    """A Job's command runs in its workingDir with its env (a Secret's key included) and a watch
    sees the Job reach Complete; its Pod carries the job-name label and ends Succeeded."""
    kube.core.create_namespaced_secret(
        NS, client.V1Secret(metadata=client.V1ObjectMeta(name="creds"), string_data={"password": "s3cret"})
    )
    secret = client.V1SecretKeySelector(name="creds", key="password")
    env = [
        client.V1EnvVar(name="GREETING", value="hello"),
        client.V1EnvVar(name="PASSWORD", value_from=client.V1EnvVarSource(secret_key_ref=secret)),
    ]
    body = job_body("hello", ["sh", "-c", 'echo "$GREETING $PASSWORD" > out.txt'], env=env, working_dir=str(tmp_path))
    created = kube.raw(kube.batch.create_namespaced_job(NS, body))
    version = created["metadata"]["resourceVersion"]
    conditions: dict[str, str] = {}
    for event in kube.watch(kube.batch.list_namespaced_job, resource_version=version, timeout_seconds=120):
        conditions = job_conditions(event["object"])
        if "Complete" in conditions:
            break
    assert conditions.get("Complete") == "CompletionsReached"
    assert (tmp_path / "out.txt").read_text() == "hello s3cret\n"
    pod = kube.only_pod("hello")
    assert pod is not None and pod["status"]["phase"] == "Succeeded"
    assert pod["metadata"]["labels"]["controller-uid"] == created["metadata"]["uid"]
    terminated = kube.container("hello")["state"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("Completed", 0)
    assert kube.job("hello")["status"]["succeeded"] == 1


def test_pod_environment_is_its_own(kube: Kube, tmp_path: Path) -> None:
    """A Pod's process sees its env, HOSTNAME (the Pod's name), the API server's address and
    this interpreter first on PATH, but nothing else of the test process's environment."""
    assert "PYTEST_CURRENT_TEST" in os.environ
    body = job_body("env", ["sh", "-c", "env > env.txt"], working_dir=str(tmp_path))
    kube.batch.create_namespaced_job(NS, body)
    wait_for(lambda: kube.ended("env"), "the job to end")
    pod = kube.only_pod("env")
    assert pod is not None
    seen = dict(line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines() if "=" in line)
    assert seen["HOSTNAME"] == pod["metadata"]["name"]
    assert seen["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert seen["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert "PYTEST_CURRENT_TEST" not in seen


def test_secret_round_trip_and_missing_secret(kube: Kube) -> None:
    """Secrets store stringData as base64 data; deleting one makes it 404; a Pod whose env
    names a missing Secret waits in CreateContainerConfigError."""
    kube.core.create_namespaced_secret(
        NS, client.V1Secret(metadata=client.V1ObjectMeta(name="tok"), string_data={"token": "abc"})
    )
    assert kube.raw(kube.core.read_namespaced_secret("tok", NS))["data"] == {"token": "YWJj"}
    kube.core.delete_namespaced_secret("tok", NS)
    with pytest.raises(ApiException) as missing:
        kube.core.read_namespaced_secret("tok", NS)
    assert missing.value.status == 404
    ref = client.V1EnvVarSource(secret_key_ref=client.V1SecretKeySelector(name="tok", key="token"))
    kube.batch.create_namespaced_job(
        NS, job_body("nosecret", ["true"], env=[client.V1EnvVar(name="T", value_from=ref)])
    )
    waiting = wait_for(lambda: kube.container("nosecret").get("state", {}).get("waiting"), "a waiting container")
    assert waiting == {"reason": "CreateContainerConfigError", "message": 'secret "tok" not found'}


@pytest.mark.parametrize("policy", ["Background", "Foreground"])
def test_delete_with_propagation_removes_pods_and_kills_process(kube: Kube, policy: str) -> None:
    """Deleting a running Job with propagationPolicy removes its Pod and kills its process."""
    kube.batch.create_namespaced_job(NS, job_body("sleeper", ["sleep", "300"]))
    pid = wait_for(lambda: kube.running_pid("sleeper"), "the pod to run")
    kube.batch.delete_namespaced_job("sleeper", NS, body=client.V1DeleteOptions(propagation_policy=policy))
    wait_for(lambda: not kube.pods(), "the pod to go")
    wait_for(lambda: not kube.batch.list_namespaced_job(NS).items, "the job to go")
    assert process_gone(pid)


def _own_session_sleeper(pid_file: Path, then: str) -> list[str]:
    """A command that starts ``sleep 300`` in a session of its own, writes its pid, then ``then``."""
    start = "import subprocess; p = subprocess.Popen(['sleep', '300'], start_new_session=True)"
    return ["sh", "-c", f'{sys.executable} -c "{start}; print(p.pid)" > {pid_file}; {then}']


def _pid_in(path: Path) -> int | None:
    text = path.read_text().strip() if path.exists() else ""
    return int(text) if text else None


@pytest.mark.parametrize("end", ["exit", "delete"])
def test_a_container_ends_with_every_process_it_started(kube: Kube, tmp_path: Path, end: str) -> None:
    """As in a container's PID namespace, a process the container started in a session of its
    own goes too when the container's main process exits, or when the Job is deleted."""
    pid_file = tmp_path / "pid"
    then = "exit 0" if end == "exit" else "exec sleep 300"
    kube.batch.create_namespaced_job(NS, job_body("spawner", _own_session_sleeper(pid_file, then)))
    pid = wait_for(lambda: _pid_in(pid_file), "the sleeper's pid")
    if end == "delete":
        kube.batch.delete_namespaced_job("spawner", NS, propagation_policy="Background")
    else:
        wait_for(lambda: kube.ended("spawner"), "the job to end")
        assert "Complete" in job_conditions(kube.job("spawner"))
    wait_for(lambda: process_gone(pid), "the sleeper to be killed")


def test_delete_without_policy_orphans_pods_like_batch_v1(kube: Kube) -> None:
    """Without a propagationPolicy a Job's Pods are orphaned (batch/v1's default) and keep
    running; force-deleting the Pod (grace 0) kills its process."""
    kube.batch.create_namespaced_job(NS, job_body("orphan", ["sleep", "300"]))
    pid = wait_for(lambda: kube.running_pid("orphan"), "the pod to run")
    kube.batch.delete_namespaced_job("orphan", NS)
    pod = kube.only_pod("orphan")
    assert pod is not None and "ownerReferences" not in pod["metadata"]
    assert not process_gone(pid)
    kube.core.delete_namespaced_pod(pod["metadata"]["name"], NS, grace_period_seconds=0)
    wait_for(lambda: process_gone(pid), "the orphan's process to be killed")


def test_failing_command_fails_the_job(kube: Kube) -> None:
    """A non-zero exit fails the Pod (Error, the exit code) and, with backoffLimit 0, the Job."""
    kube.batch.create_namespaced_job(NS, job_body("fails", ["sh", "-c", "exit 3"]))
    job = wait_for(lambda: kube.ended("fails"), "the job to end")
    assert job_conditions(job)["Failed"] == "BackoffLimitExceeded"
    pod = kube.only_pod("fails")
    assert pod is not None and pod["status"]["phase"] == "Failed"
    terminated = kube.container("fails")["state"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("Error", 3)


def test_missing_executable_is_a_start_error(kube: Kube) -> None:
    """A command that cannot be executed ends the Pod Failed with StartError, exit 128."""
    kube.batch.create_namespaced_job(NS, job_body("nobinary", ["/no/such/binary"]))
    job = wait_for(lambda: kube.ended("nobinary"), "the job to end")
    assert job_conditions(job)["Failed"] == "BackoffLimitExceeded"
    terminated = kube.container("nobinary")["state"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("StartError", 128)
    assert "/no/such/binary" in terminated["message"]


def test_watch_resumes_then_gets_410_after_expiry(kube: Kube, kube_cluster: EmulatedCluster) -> None:
    """A watch resumed from a listed resourceVersion sees later events; expire_watches() ends
    open watches, and resuming from an old version then fails with 410 until a fresh list."""
    old = kube.version(kube.batch.list_namespaced_job(NS))
    kube.batch.create_namespaced_job(NS, job_body("w1", ["true"]))
    events = kube.watch(kube.batch.list_namespaced_job, resource_version=old, timeout_seconds=120)
    first = next(events)
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "w1")
    kube_cluster.expire_watches()
    list(events)  # the open watch ends (well before its 120 s timeout) without an error
    with pytest.raises(ApiException) as gone:
        list(kube.watch(kube.batch.list_namespaced_job, resource_version=old, timeout_seconds=5))
    assert gone.value.status == 410
    fresh = kube.version(kube.batch.list_namespaced_job(NS))
    kube.batch.create_namespaced_job(NS, job_body("w2", ["true"]))
    versions = []
    for event in kube.watch(kube.batch.list_namespaced_job, resource_version=fresh, timeout_seconds=120):
        versions.append(int(event["object"]["metadata"]["resourceVersion"]))
        if (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "w2"):
            break  # (w1's status may change meanwhile: those events come too)
    assert min(versions) > int(fresh)


def test_watch_that_times_out_ends_with_a_bookmark(kube: Kube) -> None:
    """With allowWatchBookmarks a watch that reaches timeoutSeconds ends with a BOOKMARK whose
    resourceVersion is at least that of every event it sent."""
    version = kube.version(kube.batch.list_namespaced_job(NS))
    kube.batch.create_namespaced_job(NS, job_body("b1", ["true"]))
    events = list(
        kube.watch(
            kube.batch.list_namespaced_job, resource_version=version, timeout_seconds=1, allow_watch_bookmarks=True
        )
    )
    assert events[0]["type"] == "ADDED" and events[-1]["type"] == "BOOKMARK"
    versions = [int(event["object"]["metadata"]["resourceVersion"]) for event in events]
    assert versions[-1] == max(versions)


def test_watch_filters_by_label_selector(kube: Kube) -> None:
    """A Pod watch with labelSelector job-name=<job> sees only that Job's Pod."""
    version = kube.version(kube.core.list_namespaced_pod(NS))
    kube.batch.create_namespaced_job(NS, job_body("noise", ["true"]))
    kube.batch.create_namespaced_job(NS, job_body("signal", ["true"]))
    names = set()
    for event in kube.watch(
        kube.core.list_namespaced_pod, label_selector="job-name=signal", resource_version=version, timeout_seconds=120
    ):
        names.add(event["object"]["metadata"]["labels"]["job-name"])
        if event["object"]["status"]["phase"] == "Succeeded":
            break
    assert names == {"signal"}


@pytest.mark.parametrize(
    ("image", "cpu", "fragment"),
    [
        ("fault/unschedulable", None, "didn't match Pod's node affinity/selector"),
        ("busybox", "9", "Insufficient cpu"),
    ],
)
def test_unschedulable_pods_stay_pending(
    kube: Kube, tmp_path: Path, image: str, cpu: str | None, fragment: str
) -> None:
    """fault/unschedulable, or a cpu request above the node's 8 CPUs, leaves the Pod Pending
    with PodScheduled=False reason Unschedulable, and its command never runs."""
    kube.batch.create_namespaced_job(NS, job_body("unsched", ["touch", str(tmp_path / "ran")], image=image, cpu=cpu))

    def unscheduled() -> Raw | None:
        pod = kube.only_pod("unsched")
        for condition in pod["status"].get("conditions", []) if pod else []:
            if condition["type"] == "PodScheduled" and condition["status"] == "False":
                return cast(Raw, condition)
        return None

    condition = wait_for(unscheduled, "PodScheduled=False")
    assert condition["reason"] == "Unschedulable" and fragment in condition["message"]
    pod = kube.only_pod("unsched")
    assert pod is not None and pod["status"]["phase"] == "Pending"
    assert not (tmp_path / "ran").exists()


def test_image_pull_fault_backs_off_and_never_runs(kube: Kube, tmp_path: Path) -> None:
    """fault/image-pull: ErrImagePull, then ImagePullBackOff; the Pod stays Pending, nothing runs."""
    kube.batch.create_namespaced_job(NS, job_body("pull", ["touch", str(tmp_path / "ran")], image="fault/image-pull"))
    reasons: set[str] = set()

    def backed_off() -> bool:
        waiting = kube.container("pull").get("state", {}).get("waiting")
        if waiting:
            reasons.add(waiting["reason"])
        return "ImagePullBackOff" in reasons

    wait_for(backed_off, "ImagePullBackOff")
    assert "ErrImagePull" in reasons or "ImagePullBackOff" in reasons
    pod = kube.only_pod("pull")
    assert pod is not None and pod["status"]["phase"] == "Pending"
    assert "fault/image-pull" in kube.container("pull")["state"]["waiting"]["message"]
    assert not (tmp_path / "ran").exists()


def test_oom_fault_kills_the_process(kube: Kube, kube_cluster: EmulatedCluster, tmp_path: Path) -> None:
    """fault/oom: the command runs, then is killed and reported OOMKilled with exit 137."""
    kube_cluster.kubelet.oom_after = 3.0  # time enough for sh to start on a loaded machine
    command = ["sh", "-c", f"touch {tmp_path / 'ran'}; exec sleep 300"]
    kube.batch.create_namespaced_job(NS, job_body("oom", command, image="fault/oom"))
    job = wait_for(lambda: kube.ended("oom"), "the job to end")
    assert job_conditions(job)["Failed"] == "BackoffLimitExceeded"
    pod = kube.only_pod("oom")
    assert pod is not None and pod["status"]["phase"] == "Failed"
    terminated = kube.container("oom")["state"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("OOMKilled", 137)
    assert (tmp_path / "ran").exists()


def test_active_deadline_fails_the_job_and_kills_the_pod(kube: Kube) -> None:
    """activeDeadlineSeconds: the Job fails with DeadlineExceeded and its Pod's process is killed."""
    kube.batch.create_namespaced_job(NS, job_body("late", ["sleep", "300"], deadline=3))
    pid = wait_for(lambda: kube.running_pid("late"), "the pod to run")
    job = wait_for(lambda: kube.ended("late"), "the job to end")
    assert job_conditions(job)["Failed"] == "DeadlineExceeded"
    assert job["status"]["failed"] == 1
    wait_for(lambda: process_gone(pid), "the pod's process to be killed")
    wait_for(lambda: not kube.pods(), "the pod to go")


def test_request_count_counts_each_api_request(kube_cluster: EmulatedCluster, kube: Kube) -> None:
    """request_count() grows by exactly the requests a client makes."""
    before = kube_cluster.request_count()
    for _ in range(3):
        kube.core.list_namespaced_pod(NS)
    assert kube_cluster.request_count() == before + 3


def test_api_errors_and_auth(kube_cluster: EmulatedCluster, kube: Kube) -> None:
    """Errors come as the real server's statuses: 409 on a taken name, 404 in an unknown
    namespace, 422 for an invalid Job, 401 without the kubeconfig's token; the ``other``
    context works in namespace ``other``."""
    kube.batch.create_namespaced_job(NS, job_body("dup", ["true"]))
    with pytest.raises(ApiException) as taken:
        kube.batch.create_namespaced_job(NS, job_body("dup", ["true"]))
    assert taken.value.status == 409
    assert json.loads(str(taken.value.body))["message"] == 'jobs.batch "dup" already exists'
    with pytest.raises(ApiException) as nowhere:
        kube.batch.create_namespaced_job("nowhere", job_body("j", ["true"]))
    assert nowhere.value.status == 404
    bad: Any = job_body("bad", ["true"])
    bad.spec.template.spec.restart_policy = "Always"
    with pytest.raises(ApiException) as invalid:
        kube.batch.create_namespaced_job(NS, bad)
    assert invalid.value.status == 422
    anonymous = client.Configuration()
    anonymous.host = kube_cluster.server_url
    with pytest.raises(ApiException) as unauthorized:
        client.BatchV1Api(client.ApiClient(anonymous)).list_namespaced_job(NS)
    assert unauthorized.value.status == 401
    other = config.new_client_from_config(str(kube_cluster.kubeconfig), context="other")  # type: ignore[no-untyped-call]
    client.BatchV1Api(other).create_namespaced_job("other", job_body("elsewhere", ["true"]))
    everywhere = kube.raw(kube.batch.list_job_for_all_namespaces())["items"]
    assert [(j["metadata"]["namespace"], j["metadata"]["name"]) for j in everywhere] == [
        ("default", "dup"),
        ("other", "elsewhere"),
    ]


def test_secret_owned_by_a_job_goes_with_it(kube: Kube) -> None:
    """Secrets owned by a Job (one patched to be, by a merge patch, then a JSON patch on its
    labels; one created so after the Pod) are garbage-collected when the Job is deleted with
    propagationPolicy=Background."""
    kube.core.create_namespaced_secret(
        NS, client.V1Secret(metadata=client.V1ObjectMeta(name="owned"), string_data={"k": "v"})
    )
    job = kube.raw(kube.batch.create_namespaced_job(NS, job_body("owner", ["sleep", "300"])))
    owner = {"api_version": "batch/v1", "kind": "Job", "name": "owner", "uid": job["metadata"]["uid"]}
    reference = {"apiVersion": "batch/v1", "kind": "Job", "name": "owner", "uid": job["metadata"]["uid"]}
    kube.core.patch_namespaced_secret("owned", NS, {"metadata": {"ownerReferences": [reference]}})
    kube.core.patch_namespaced_secret("owned", NS, [{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}])
    patched = kube.raw(kube.core.read_namespaced_secret("owned", NS))
    assert patched["metadata"]["labels"] == {"a": "b"}
    assert patched["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    wait_for(lambda: kube.running_pid("owner"), "the pod to run")
    later = client.V1Secret(
        metadata=client.V1ObjectMeta(name="later", owner_references=[client.V1OwnerReference(**owner)]),
        string_data={"k": "v"},
    )
    kube.core.create_namespaced_secret(NS, later)
    kube.batch.delete_namespaced_job("owner", NS, propagation_policy="Background")
    wait_for(lambda: not kube.core.list_namespaced_secret(NS).items, "the secret to go")
    wait_for(lambda: not kube.pods(), "the pod to go")


def test_pod_log_is_the_process_output(kube: Kube) -> None:
    """GET .../pods/{name}/log serves what the Pod's process wrote to stdout and stderr."""
    kube.batch.create_namespaced_job(NS, job_body("talk", ["sh", "-c", "echo out; echo err >&2"]))
    wait_for(lambda: kube.ended("talk"), "the job to end")
    pod = kube.only_pod("talk")
    assert pod is not None
    assert kube.core.read_namespaced_pod_log(pod["metadata"]["name"], NS) == "out\nerr\n"


def test_stopping_the_cluster_kills_running_pods(tmp_path: Path) -> None:
    """EmulatedCluster.stop() kills the process group of every Pod still running."""
    with EmulatedCluster(tmp_path / "k8s") as cluster:
        api = config.new_client_from_config(str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
        kube = Kube(api)
        kube.batch.create_namespaced_job(NS, job_body("forever", ["sh", "-c", "sleep 300 & wait"]))
        pid = wait_for(lambda: kube.running_pid("forever"), "the pod to run")
        api.close()
    assert process_gone(pid)
