"""The PSI/J `kubernetes` executor, used through plain PSI/J.

The tests with the `kube_cluster` fixture run against an EMULATED Kubernetes API server on
loopback (pilot_kubernetes.testing: a real HTTP server with the batch/v1 and core/v1 API, and
a test kubelet that runs each Pod's command as a local process, ignoring the image). No real
Kubernetes runs here; with KUBECONFIG set, the `k8s_real` tests of the suite run against a
real cluster instead. The other tests need no server: the Job manifest, the state mapping and
PSI/J's discovery of the executor.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psij
import pytest
from kubernetes.client import ApiClient, V1Job, V1Secret
from psij import InvalidJobException, Job, JobAttributes, JobSpec, JobState, ResourceSpecV1

from pilot_kubernetes.k8s_manifest import Defaults, build
from pilot_kubernetes.k8s_model import JobInfo, PodInfo, decide
from pilot_kubernetes.psij_executor import KubernetesExecutorConfig, KubernetesJobExecutor
from pilot_kubernetes.testing import EmulatedCluster

DEFAULTS = Defaults(namespace="jobs", image="example/image:1")
KUBECONFIG = """\
apiVersion: v1
kind: Config
current-context: emulated
clusters:
- name: c
  cluster: {server: "http://127.0.0.1:9"}
users:
- name: u
  user: {token: not-a-secret}
contexts:
- name: emulated
  context: {cluster: c, user: u, namespace: team-a}
- name: other
  context: {cluster: c, user: u, namespace: team-b}
"""


def _job(*args: str, **spec: object) -> Job:
    attributes = spec.pop("attributes", None)
    return Job(JobSpec(executable=args[0], arguments=list(args[1:]), attributes=attributes, **spec))  # type: ignore[arg-type]


def _roundtrip(body: dict[str, object]) -> object:
    """The manifest read into the official client's V1Job model and written back."""
    client: Any = ApiClient()  # untyped method
    return client.sanitize_for_serialization(V1Job.from_dict(body))


def _container(body: dict[str, object]) -> dict[str, object]:
    pod = body["spec"]["template"]["spec"]  # type: ignore[index]
    return pod["containers"][0]  # type: ignore[no-any-return]


# -- discovery -----------------------------------------------------------------------------


def test_psij_finds_the_executor_through_its_descriptor(tmp_path: Path) -> None:
    """get_instance("kubernetes") gives the one executor class users import, configured from
    the kubeconfig's named context (no request is made: nothing listens on port 9)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    assert "kubernetes" in psij.JobExecutor.get_executor_names()
    executor = psij.JobExecutor.get_instance(
        "kubernetes", config=KubernetesExecutorConfig(kubeconfig=kubeconfig, context="other")
    )
    assert isinstance(executor, KubernetesJobExecutor)
    assert executor.name == "kubernetes"
    assert executor.namespace == "team-b"
    default = KubernetesJobExecutor(config=KubernetesExecutorConfig(kubeconfig=kubeconfig))
    assert default.namespace == "team-a"
    with pytest.raises(psij.SubmitException, match="no-such-context"):
        KubernetesJobExecutor(config=KubernetesExecutorConfig(kubeconfig=kubeconfig, context="no-such-context"))


def test_importing_psij_does_not_import_the_kubernetes_client() -> None:
    """PSI/J imports every descriptor on `import psij`: ours must stay cheap."""
    code = "import sys, psij; assert 'kubernetes' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the Job manifest ------------------------------------------------------------------------


def test_manifest_maps_the_psij_job() -> None:
    """Executable, arguments, environment, directory, resources and duration map to a valid
    batch/v1 Job (it round-trips through the official client's V1Job model)."""
    job = _job(
        "/bin/echo",
        "a b",
        "$HOME",
        directory="/data/run",
        environment={"K": "v", "N": 3},
        resources=ResourceSpecV1(process_count=2, cpu_cores_per_process=2, memory=2**30),
        attributes=JobAttributes(duration=timedelta(minutes=5)),
        name="My Job!",
    )
    manifest = build(job, DEFAULTS)
    body = manifest.body
    assert _roundtrip(body) == body
    assert manifest.namespace == "jobs"
    assert manifest.name == f"my-job-{job.id}"
    assert body["spec"]["activeDeadlineSeconds"] == 300  # type: ignore[index]
    assert body["spec"]["backoffLimit"] == 0  # type: ignore[index]
    container = _container(body)
    assert container["command"] == ["/bin/echo", "a b", "$HOME"]
    assert container["image"] == "example/image:1"
    assert container["workingDir"] == "/data/run"
    assert container["env"] == [{"name": "K", "value": "v"}, {"name": "N", "value": "3"}]
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": str(2**30)},
        "limits": {"cpu": "4", "memory": str(2**30)},
    }
    template: Any = body["spec"]
    for labels in (body["metadata"]["labels"], template["template"]["metadata"]["labels"]):  # type: ignore[index]
        assert labels["app.kubernetes.io/managed-by"] == "pilot"
        assert labels["pilot/psij-job-id"] == job.id


def test_manifest_custom_attributes() -> None:
    """The kubernetes.* custom attributes reach the Pod spec."""
    attributes = JobAttributes(
        custom_attributes={
            "kubernetes.image": "registry/pilot:2",
            "kubernetes.namespace": "science",
            "kubernetes.service_account": "pilot-sa",
            "kubernetes.image_pull_secrets": ["regcred"],
            "kubernetes.node_selector": {"disk": "ssd"},
            "kubernetes.volumes": [{"claim": "scratch", "mount_path": "/scratch"}],
            "kubernetes.env_from_secret": "store-credentials",
            "slurm.constraint": "ignored: another executor's attribute",
        }
    )
    manifest = build(_job("/bin/true", attributes=attributes), DEFAULTS)
    body = manifest.body
    assert _roundtrip(body) == body
    assert manifest.namespace == "science"
    pod = body["spec"]["template"]["spec"]  # type: ignore[index]
    assert pod["serviceAccountName"] == "pilot-sa"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == {"disk": "ssd"}
    assert pod["volumes"] == [
        {"name": "volume-0", "persistentVolumeClaim": {"claimName": "scratch", "readOnly": False}}
    ]
    container = _container(body)
    assert container["image"] == "registry/pilot:2"
    assert container["volumeMounts"] == [{"name": "volume-0", "mountPath": "/scratch", "readOnly": False}]
    assert container["envFrom"] == [{"secretRef": {"name": "store-credentials"}}]
    keyed = build(
        _job(
            "/bin/true",
            attributes=JobAttributes(
                custom_attributes={"kubernetes.env_from_secret": {"name": "s", "keys": ["PASSWORD"]}}
            ),
        ),
        DEFAULTS,
    )
    assert _container(keyed.body)["env"] == [
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "PASSWORD"}}}
    ]


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (
            {"attributes": JobAttributes(custom_attributes={"kubernetes.imag": "x"})},
            "unknown custom attribute 'kubernetes.imag'",
        ),
        ({"resources": ResourceSpecV1(node_count=2)}, "node_count must be 1"),
        (
            {"attributes": JobAttributes(custom_attributes={"kubernetes.volumes": [{"claim": "c"}]})},
            "'claim' and 'mount_path'",
        ),
        ({"pre_launch": "/etc/profile"}, "pre/post launch"),
    ],
)
def test_manifest_rejects_what_cannot_map(spec: dict[str, object], fragment: str) -> None:
    """A job the executor cannot express is refused with a message saying why."""
    with pytest.raises(InvalidJobException) as info:
        build(_job("/bin/true", **spec), DEFAULTS)
    assert fragment in str(info.value)


def test_stdio_redirection_runs_in_a_real_shell(tmp_path: Path) -> None:
    """stdin/stdout/stderr paths become a /bin/sh wrapper; the paths are arguments, so odd
    characters in them are not interpreted (run here with the local /bin/sh)."""
    weird = tmp_path / "o u't $(x)"
    weird.mkdir()
    (weird / "in").write_text("from stdin\n")
    job = _job(
        "/bin/sh",
        "-c",
        "cat; echo err >&2",
        stdin_path=weird / "in",
        stdout_path=weird / "out",
        stderr_path=weird / "err",
    )
    command = _container(build(job, DEFAULTS).body)["command"]
    assert isinstance(command, list)
    subprocess.run(command, check=True)
    assert (weird / "out").read_text() == "from stdin\n"
    assert (weird / "err").read_text() == "err\n"


# -- the state mapping -----------------------------------------------------------------------


def _pod(phase: str, status: dict[str, object] | None = None, container: dict[str, object] | None = None) -> PodInfo:
    body: dict[str, object] = {"phase": phase, **(status or {})}
    if container is not None:
        body["containerStatuses"] = [{"name": "main", "state": container}]
    return PodInfo.parse({"metadata": {"name": "p", "namespace": "n", "labels": {"job-name": "j"}}, "status": body})


def _kjob(conditions: list[dict[str, str]]) -> JobInfo:
    return JobInfo.parse({"metadata": {"name": "j", "namespace": "n"}, "status": {"conditions": conditions}})


def test_states_from_job_and_pod() -> None:
    """Pending/unschedulable/pulling are QUEUED with the reason, running is ACTIVE, and the
    failures carry the Kubernetes reason and message."""
    unschedulable = _pod(
        "Pending",
        {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/1 nodes are available: 1 Insufficient cpu.",
                }
            ]
        },
    )
    d = decide(None, unschedulable)
    assert (d.state, d.message) == (JobState.QUEUED, "Unschedulable: 0/1 nodes are available: 1 Insufficient cpu.")
    assert d.unschedulable
    pulling = _pod("Pending", container={"waiting": {"reason": "ErrImagePull", "message": "x"}})
    assert decide(None, pulling).state == JobState.QUEUED
    backoff = _pod(
        "Pending",
        container={"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "fault/image-pull"'}},
    )
    d = decide(None, backoff)
    assert (d.state, d.message, d.abandon) == (
        JobState.FAILED,
        'ImagePullBackOff: Back-off pulling image "fault/image-pull"',
        True,
    )
    assert decide(None, _pod("Running", container={"running": {}})).state == JobState.ACTIVE
    oom = _pod("Failed", container={"terminated": {"reason": "OOMKilled", "exitCode": 137}})
    d = decide(
        _kjob(
            [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ]
        ),
        oom,
    )
    assert (d.state, d.exit_code, d.reason) == (JobState.FAILED, 137, "OOMKilled")
    assert d.message is not None and d.message.startswith("OOMKilled")
    deadline = _kjob(
        [
            {
                "type": "Failed",
                "status": "True",
                "reason": "DeadlineExceeded",
                "message": "Job was active longer than specified deadline",
            }
        ]
    )
    d = decide(deadline, None)
    assert (d.state, d.message) == (JobState.FAILED, "DeadlineExceeded: Job was active longer than specified deadline")
    failed = _pod("Failed", container={"terminated": {"reason": "Error", "exitCode": 3}})
    assert (decide(None, failed).state, decide(None, failed).exit_code) == (JobState.FAILED, 3)
    done = _kjob([{"type": "Complete", "status": "True"}])
    assert (decide(done, None).state, decide(done, None).exit_code) == (JobState.COMPLETED, 0)


# -- against a cluster: the EMULATED API server (kube_cluster), or a real one (k8s_real) -----

WAIT = timedelta(seconds=120)


@dataclass
class Target:
    """Where the executor runs jobs: the emulated cluster, or the real one of KUBECONFIG."""

    kubeconfig: Path
    image: str
    emulated: EmulatedCluster | None


@pytest.fixture(params=["emulated", pytest.param("real", marks=pytest.mark.k8s_real)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """The EMULATED cluster (commands run as local processes, image ignored), or with the
    k8s_real marker and KUBECONFIG set, the real cluster (busybox image)."""
    if request.param == "real":
        yield Target(Path(os.environ["KUBECONFIG"]), "busybox:1.36", None)
        return
    with EmulatedCluster(tmp_path / "emulated-k8s") as cluster:
        yield Target(cluster.kubeconfig, "busybox:1.36", cluster)


def _executor(
    target: Target | Path, watch_timeout: int = 120, unschedulable_timeout: float | None = None
) -> KubernetesJobExecutor:
    kubeconfig = target.kubeconfig if isinstance(target, Target) else target
    image = target.image if isinstance(target, Target) else "busybox:1.36"
    config = KubernetesExecutorConfig(
        kubeconfig=kubeconfig, image=image, watch_timeout=watch_timeout, unschedulable_timeout=unschedulable_timeout
    )
    executor = psij.JobExecutor.get_instance("kubernetes", config=config)
    assert isinstance(executor, KubernetesJobExecutor)
    return executor


@pytest.fixture
def executors() -> Iterator[list[KubernetesJobExecutor]]:
    """Executors a test makes; their watches are stopped afterwards."""
    made: list[KubernetesJobExecutor] = []
    yield made
    for executor in made:
        executor.close()


def _run(executor: KubernetesJobExecutor, job: Job) -> psij.JobStatus:
    executor.submit(job)
    status = job.wait(timeout=WAIT)
    assert status is not None, f"{job.native_id} did not end: {job.status}"
    return status


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    """Wait (generously) until `condition()`; not a timing assertion, a bound on a hang."""
    deadline = time.monotonic() + WAIT.total_seconds()
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def _our_objects(executor: KubernetesJobExecutor, job: Job) -> tuple[list[str], list[str]]:
    jobs, _ = executor.api.list_jobs(executor.namespace, f"pilot/psij-job-id={job.id}")
    pods, _ = executor.api.list_pods(executor.namespace, f"pilot/psij-job-id={job.id}")
    return [j.meta.name for j in jobs], [p.meta.name for p in pods]


def test_jobs_complete_and_fail_with_their_exit_code(target: Target, executors: list[KubernetesJobExecutor]) -> None:
    """A job that exits 0 is COMPLETED; one that exits 3 is FAILED with exit code 3."""
    executor = _executor(target)
    executors.append(executor)
    ok = _run(executor, _job("/bin/sh", "-c", "exit 0"))
    assert (ok.state, ok.exit_code) == (JobState.COMPLETED, 0)
    bad = _run(executor, _job("/bin/sh", "-c", "echo oops >&2; exit 3"))
    assert (bad.state, bad.exit_code) == (JobState.FAILED, 3), str(bad)
    assert bad.message is not None and "exit code 3" in bad.message


def test_environment_directory_stdout_and_secret_env(
    kube_cluster: EmulatedCluster, executors: list[KubernetesJobExecutor], tmp_path: Path
) -> None:
    """Environment, working directory, stdout path and env from a Secret reach the process
    (EMULATED cluster: the Pod's command runs as a local process); the secret's value is in
    no Job object."""
    executor = _executor(kube_cluster.kubeconfig)
    executors.append(executor)
    executor.api._core.create_namespaced_secret(
        "default",
        V1Secret.from_dict(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "creds"},
                "data": {"PASSWORD": base64.b64encode(b"s3cret").decode()},
            }
        ),
    )
    job = _job(
        "/bin/sh",
        "-c",
        'echo "$GREETING $PASSWORD $(pwd)"',
        directory=tmp_path,
        environment={"GREETING": "hello"},
        stdout_path=tmp_path / "out",
        attributes=JobAttributes(custom_attributes={"kubernetes.env_from_secret": "creds"}),
    )
    assert _run(executor, job).state == JobState.COMPLETED
    assert (tmp_path / "out").read_text() == f"hello s3cret {tmp_path}\n"
    assert job.native_id is not None
    raw = executor.api._raw(executor.api._batch.read_namespaced_job, job.native_id.split("/")[1], "default")
    assert "s3cret" not in str(raw)


@pytest.mark.parametrize(
    ("spec", "reason", "exit_code"),
    [
        (
            {"attributes": JobAttributes(custom_attributes={"kubernetes.image": "fault/image-pull"})},
            'ImagePullBackOff: Back-off pulling image "fault/image-pull"',
            None,
        ),
        ({"attributes": JobAttributes(custom_attributes={"kubernetes.image": "fault/oom"})}, "OOMKilled", 137),
        (
            {"attributes": JobAttributes(duration=timedelta(seconds=2))},
            "DeadlineExceeded: Job was active longer than specified deadline",
            None,
        ),
    ],
)
def test_failures_carry_the_kubernetes_reason(
    kube_cluster: EmulatedCluster,
    executors: list[KubernetesJobExecutor],
    spec: dict[str, object],
    reason: str,
    exit_code: int | None,
) -> None:
    """An image that cannot be pulled, an OOM-killed container and an exceeded deadline FAIL
    the job with Kubernetes' reason and message (EMULATED cluster faults); none leaves a Job
    behind that Kubernetes would keep pending."""
    executor = _executor(kube_cluster.kubeconfig)
    executors.append(executor)
    job = _job("/bin/sleep", "600", **spec)
    status = _run(executor, job)
    assert status.state == JobState.FAILED
    assert status.message is not None and status.message.startswith(reason)
    assert status.metadata is not None and status.metadata["reason"] == reason.split(":", maxsplit=1)[0]
    if exit_code is not None:
        assert status.exit_code == exit_code
    if reason.startswith("ImagePullBackOff"):
        _wait_for(lambda: _our_objects(executor, job) == ([], []), "the abandoned Job to go")


def test_unschedulable_stays_queued_with_the_reason_then_fails_after_the_grace(
    kube_cluster: EmulatedCluster, executors: list[KubernetesJobExecutor]
) -> None:
    """An Unschedulable Pod leaves the job QUEUED with the scheduler's message; with an
    unschedulable_timeout the job FAILS after it and its Job is deleted (EMULATED cluster)."""
    unschedulable = {"attributes": JobAttributes(custom_attributes={"kubernetes.image": "fault/unschedulable"})}
    patient = _executor(kube_cluster.kubeconfig)
    executors.append(patient)
    waiting = _job("/bin/true", **unschedulable)
    patient.submit(waiting)
    _wait_for(lambda: (waiting.status.message or "").startswith("Unschedulable: "), "the Unschedulable message")
    assert waiting.status.state == JobState.QUEUED
    impatient = _executor(kube_cluster.kubeconfig, unschedulable_timeout=1.0)
    executors.append(impatient)
    job = _job("/bin/true", **unschedulable)
    status = _run(impatient, job)
    assert status.state == JobState.FAILED
    assert status.message is not None and status.message.startswith("Unschedulable: ")
    _wait_for(lambda: _our_objects(impatient, job) == ([], []), "the unschedulable Job to go")
    assert waiting.status.state == JobState.QUEUED


def test_what_the_watch_saw_before_submit_returned_is_kept(
    kube_cluster: EmulatedCluster, executors: list[KubernetesJobExecutor]
) -> None:
    """The watch may report a Job (QUEUED, "Unschedulable: ...") before ``submit`` has returned:
    submit's own first QUEUED must not erase that message (EMULATED cluster; the race is forced
    by holding submit until the watch has reported)."""
    executor = _executor(kube_cluster.kubeconfig)
    executors.append(executor)
    job = _job("/bin/true", attributes=JobAttributes(custom_attributes={"kubernetes.image": "fault/unschedulable"}))
    create = executor.api.create_job

    def create_then_wait_for_the_watch(namespace: str, body: dict[str, object]) -> object:
        created = create(namespace, body)
        _wait_for(lambda: (job.status.message or "").startswith("Unschedulable: "), "the watch's report")
        return created

    executor.api.create_job = create_then_wait_for_the_watch  # type: ignore[method-assign]
    executor.submit(job)
    assert job.status.state == JobState.QUEUED
    assert (job.status.message or "").startswith("Unschedulable: "), job.status


def test_cancel_deletes_the_job_and_its_pods(target: Target, executors: list[KubernetesJobExecutor]) -> None:
    """cancel: the job ends CANCELED once its Job and Pods are gone."""
    executor = _executor(target)
    executors.append(executor)
    job = _job("/bin/sleep", "600")
    executor.submit(job)
    assert job.wait(timeout=WAIT, target_states=[JobState.ACTIVE]) is not None
    names, pods = _our_objects(executor, job)
    assert len(names) == 1 and len(pods) == 1
    executor.cancel(job)
    status = job.wait(timeout=WAIT)
    assert status is not None and status.state == JobState.CANCELED
    assert _our_objects(executor, job) == ([], [])


def test_attach_and_cancel_from_another_executor(target: Target, executors: list[KubernetesJobExecutor]) -> None:
    """A second executor (as another process would) attaches by native id, sees the job run
    and cancels it; the first sees it CANCELED too. An unknown id attaches as FAILED."""
    first, second = _executor(target), _executor(target)
    executors.extend([first, second])
    job = _job("/bin/sleep", "600")
    first.submit(job)
    assert job.wait(timeout=WAIT, target_states=[JobState.ACTIVE]) is not None
    assert job.native_id is not None
    assert job.native_id in second.list()
    again = Job()
    second.attach(again, job.native_id)
    assert again.wait(timeout=WAIT, target_states=[JobState.ACTIVE]) is not None
    mirror = Job()
    first.attach(mirror, job.native_id)  # the executor already follows it: a second view
    assert mirror.status.state == JobState.ACTIVE
    second.cancel(again)
    for each in (again, job, mirror):
        status = each.wait(timeout=WAIT)
        assert status is not None and status.state == JobState.CANCELED
    assert job.status.message is not None and "was deleted" in job.status.message
    missing = Job()
    second.attach(missing, f"{second.namespace}/no-such-job")
    assert missing.status.state == JobState.FAILED


def test_one_watch_per_namespace_shared_by_all_jobs(
    kube_cluster: EmulatedCluster, executors: list[KubernetesJobExecutor], tmp_path: Path
) -> None:
    """Five jobs in two namespaces share two watches, not a poll per job: the API requests
    of the whole run are the creations plus a list and a watch of Jobs and Pods per
    namespace (EMULATED cluster, which counts requests)."""
    executor = _executor(kube_cluster.kubeconfig, watch_timeout=600)
    executors.append(executor)
    gate = tmp_path / "gate"
    script = f'while [ ! -e "{gate}" ]; do sleep 0.2; done'
    before = kube_cluster.request_count()
    jobs = [_job("/bin/sh", "-c", script) for _ in range(4)]
    jobs.append(
        _job("/bin/sh", "-c", script, attributes=JobAttributes(custom_attributes={"kubernetes.namespace": "other"}))
    )
    for job in jobs:
        executor.submit(job)
    for job in jobs:
        assert job.wait(timeout=WAIT, target_states=[JobState.ACTIVE]) is not None
    assert sorted(executor.watches()) == ["default", "other"]
    gate.touch()
    for job in jobs:
        status = job.wait(timeout=WAIT)
        assert status is not None and status.state == JobState.COMPLETED
    assert executor.watches() == {}  # no job left to follow: the watches ended
    requests = kube_cluster.request_count() - before
    print(f"API requests for {len(jobs)} jobs: {requests}")
    assert requests <= len(jobs) + 2 * 4


def test_watch_resumes_after_expiry_with_a_fresh_list(
    kube_cluster: EmulatedCluster, executors: list[KubernetesJobExecutor], tmp_path: Path
) -> None:
    """When the server ends the watches and their resourceVersion is too old (410 Gone),
    the watch lists again and goes on: a job finishing afterwards is seen COMPLETED
    (EMULATED cluster)."""
    executor = _executor(kube_cluster.kubeconfig)
    executors.append(executor)
    gate = tmp_path / "gate"
    job = _job("/bin/sh", "-c", f'while [ ! -e "{gate}" ]; do sleep 0.2; done')
    executor.submit(job)
    assert job.wait(timeout=WAIT, target_states=[JobState.ACTIVE]) is not None
    watch = executor.watches()["default"]
    _wait_for(lambda: min(watch.lists.values()) >= 1, "the first lists")
    listed = dict(watch.lists)
    kube_cluster.expire_watches()
    _wait_for(lambda: all(watch.lists[k] > listed[k] for k in listed), "fresh lists")
    gate.touch()
    status = job.wait(timeout=WAIT)
    assert status is not None and status.state == JobState.COMPLETED


def test_in_cluster_configuration_from_the_service_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           executors: list[KubernetesJobExecutor]) -> None:
    """Inside a Pod (no kubeconfig; ``KUBERNETES_SERVICE_HOST``/``PORT`` and the service account's
    token, CA and namespace) the executor configures itself in-cluster, over HTTPS, and uses the
    service account's namespace. Against the EMULATED API server (``tls=True``, a throw-away
    certificate); the service-account files Kubernetes mounts at /var/run/secrets/... are a
    directory of the test, so the client's two path constants (and ours) point there."""
    from kubernetes.config import incluster_config

    from pilot_kubernetes import k8s_api

    with EmulatedCluster(tmp_path / "k8s", tls=True) as cluster:
        account = tmp_path / "serviceaccount"
        for name, value in cluster.service_account(account, namespace="other").items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("KUBECONFIG", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.kube/config to prefer
        monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(account / "token"))
        monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(account / "ca.crt"))
        monkeypatch.setattr(k8s_api, "SERVICE_ACCOUNT_NAMESPACE", account / "namespace")
        executor = psij.JobExecutor.get_instance("kubernetes", config=KubernetesExecutorConfig())
        assert isinstance(executor, KubernetesJobExecutor)
        executors.append(executor)
        assert executor.namespace == "other"
        job = _job("/bin/sh", "-c", "exit 0")
        assert _run(executor, job).state == JobState.COMPLETED
        assert str(job.native_id).startswith("other/")
        executor.close()
        executors.remove(executor)
