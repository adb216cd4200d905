"""The PSI/J `kubernetes` executor, used through plain PSI/J.

The tests with the `kube_cluster` fixture run against an EMULATED Kubernetes API server on
loopback (pilot_kubernetes.testing: a real HTTP server with the batch/v1 and core/v1 API, and
a test kubelet that runs each Pod's command as a local process, ignoring the image). No real
Kubernetes runs here; with KUBECONFIG set, the `k8s_real` tests of the suite run against a
real cluster instead. The other tests need no server: the Job manifest, the state mapping and
PSI/J's discovery of the executor.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import psij
import pytest
from kubernetes.client import ApiClient, V1Job
from psij import InvalidJobException, Job, JobAttributes, JobSpec, JobState, ResourceSpecV1

from pilot_kubernetes.k8s_manifest import Defaults, build
from pilot_kubernetes.k8s_model import JobInfo, PodInfo, decide
from pilot_kubernetes.psij_executor import KubernetesExecutorConfig, KubernetesJobExecutor

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
    return Job(JobSpec(executable=args[0], arguments=list(args[1:]),
                       attributes=attributes, **spec))  # type: ignore[arg-type]


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
        "kubernetes", config=KubernetesExecutorConfig(kubeconfig=kubeconfig, context="other"))
    assert isinstance(executor, KubernetesJobExecutor)
    assert executor.name == "kubernetes"
    assert executor.namespace == "team-b"
    default = KubernetesJobExecutor(config=KubernetesExecutorConfig(kubeconfig=kubeconfig))
    assert default.namespace == "team-a"


def test_importing_psij_does_not_import_the_kubernetes_client() -> None:
    """PSI/J imports every descriptor on `import psij`: ours must stay cheap."""
    code = "import sys, psij; assert 'kubernetes' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the Job manifest ------------------------------------------------------------------------


def test_manifest_maps_the_psij_job() -> None:
    """Executable, arguments, environment, directory, resources and duration map to a valid
    batch/v1 Job (it round-trips through the official client's V1Job model)."""
    job = _job("/bin/echo", "a b", "$HOME", directory="/data/run", environment={"K": "v", "N": 3},
               resources=ResourceSpecV1(process_count=2, cpu_cores_per_process=2,
                                        memory=2 ** 30),
               attributes=JobAttributes(duration=timedelta(minutes=5)), name="My Job!")
    manifest = build(job, DEFAULTS)
    body = manifest.body
    assert ApiClient().sanitize_for_serialization(V1Job.from_dict(body)) == body
    assert manifest.namespace == "jobs"
    assert manifest.name == f"my-job-{job.id}"
    assert body["spec"]["activeDeadlineSeconds"] == 300  # type: ignore[index]
    assert body["spec"]["backoffLimit"] == 0  # type: ignore[index]
    container = _container(body)
    assert container["command"] == ["/bin/echo", "a b", "$HOME"]
    assert container["image"] == "example/image:1"
    assert container["workingDir"] == "/data/run"
    assert container["env"] == [{"name": "K", "value": "v"}, {"name": "N", "value": "3"}]
    assert container["resources"] == {"requests": {"cpu": "4", "memory": str(2 ** 30)},
                                      "limits": {"cpu": "4", "memory": str(2 ** 30)}}
    for labels in (body["metadata"]["labels"],  # type: ignore[index]
                   body["spec"]["template"]["metadata"]["labels"]):  # type: ignore[index]
        assert labels["app.kubernetes.io/managed-by"] == "pilot"
        assert labels["pilot/psij-job-id"] == job.id


def test_manifest_custom_attributes() -> None:
    """The kubernetes.* custom attributes reach the Pod spec."""
    attributes = JobAttributes(custom_attributes={
        "kubernetes.image": "registry/pilot:2", "kubernetes.namespace": "science",
        "kubernetes.service_account": "pilot-sa", "kubernetes.image_pull_secrets": ["regcred"],
        "kubernetes.node_selector": {"disk": "ssd"},
        "kubernetes.volumes": [{"claim": "scratch", "mount_path": "/scratch"}],
        "kubernetes.env_from_secret": "store-credentials",
        "slurm.constraint": "ignored: another executor's attribute"})
    manifest = build(_job("/bin/true", attributes=attributes), DEFAULTS)
    body = manifest.body
    assert ApiClient().sanitize_for_serialization(V1Job.from_dict(body)) == body
    assert manifest.namespace == "science"
    pod = body["spec"]["template"]["spec"]  # type: ignore[index]
    assert pod["serviceAccountName"] == "pilot-sa"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == {"disk": "ssd"}
    assert pod["volumes"] == [{"name": "volume-0", "persistentVolumeClaim": {
        "claimName": "scratch", "readOnly": False}}]
    container = _container(body)
    assert container["image"] == "registry/pilot:2"
    assert container["volumeMounts"] == [{"name": "volume-0", "mountPath": "/scratch",
                                          "readOnly": False}]
    assert container["envFrom"] == [{"secretRef": {"name": "store-credentials"}}]
    keyed = build(_job("/bin/true", attributes=JobAttributes(custom_attributes={
        "kubernetes.env_from_secret": {"name": "s", "keys": ["PASSWORD"]}})), DEFAULTS)
    assert _container(keyed.body)["env"] == [
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "PASSWORD"}}}]


@pytest.mark.parametrize(("spec", "fragment"), [
    ({"attributes": JobAttributes(custom_attributes={"kubernetes.imag": "x"})},
     "unknown custom attribute 'kubernetes.imag'"),
    ({"resources": ResourceSpecV1(node_count=2)}, "node_count must be 1"),
    ({"attributes": JobAttributes(custom_attributes={"kubernetes.volumes": [{"claim": "c"}]})},
     "'claim' and 'mount_path'"),
    ({"pre_launch": "/etc/profile"}, "pre/post launch"),
])
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
    job = _job("/bin/sh", "-c", "cat; echo err >&2", stdin_path=weird / "in",
               stdout_path=weird / "out", stderr_path=weird / "err")
    command = _container(build(job, DEFAULTS).body)["command"]
    assert isinstance(command, list)
    subprocess.run(command, check=True)
    assert (weird / "out").read_text() == "from stdin\n"
    assert (weird / "err").read_text() == "err\n"


# -- the state mapping -----------------------------------------------------------------------


def _pod(phase: str, status: dict[str, object] | None = None,
         container: dict[str, object] | None = None) -> PodInfo:
    body: dict[str, object] = {"phase": phase, **(status or {})}
    if container is not None:
        body["containerStatuses"] = [{"name": "main", "state": container}]
    return PodInfo.parse({"metadata": {"name": "p", "namespace": "n",
                                       "labels": {"job-name": "j"}}, "status": body})


def _kjob(conditions: list[dict[str, str]]) -> JobInfo:
    return JobInfo.parse({"metadata": {"name": "j", "namespace": "n"},
                          "status": {"conditions": conditions}})


def test_states_from_job_and_pod() -> None:
    """Pending/unschedulable/pulling are QUEUED with the reason, running is ACTIVE, and the
    failures carry the Kubernetes reason and message."""
    unschedulable = _pod("Pending", {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/1 nodes are available: 1 Insufficient cpu."}]})
    d = decide(None, unschedulable)
    assert (d.state, d.message) == (JobState.QUEUED,
                                    "Unschedulable: 0/1 nodes are available: 1 Insufficient cpu.")
    assert d.unschedulable
    pulling = _pod("Pending", container={"waiting": {"reason": "ErrImagePull", "message": "x"}})
    assert decide(None, pulling).state == JobState.QUEUED
    backoff = _pod("Pending", container={"waiting": {
        "reason": "ImagePullBackOff", "message": 'Back-off pulling image "fault/image-pull"'}})
    d = decide(None, backoff)
    assert (d.state, d.message, d.abandon) == (
        JobState.FAILED, 'ImagePullBackOff: Back-off pulling image "fault/image-pull"', True)
    assert decide(None, _pod("Running", container={"running": {}})).state == JobState.ACTIVE
    oom = _pod("Failed", container={"terminated": {"reason": "OOMKilled", "exitCode": 137}})
    d = decide(_kjob([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                       "message": "Job has reached the specified backoff limit"}]), oom)
    assert (d.state, d.exit_code, d.reason) == (JobState.FAILED, 137, "OOMKilled")
    assert d.message is not None and d.message.startswith("OOMKilled")
    deadline = _kjob([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                       "message": "Job was active longer than specified deadline"}])
    d = decide(deadline, None)
    assert (d.state, d.message) == (
        JobState.FAILED, "DeadlineExceeded: Job was active longer than specified deadline")
    failed = _pod("Failed", container={"terminated": {"reason": "Error", "exitCode": 3}})
    assert (decide(None, failed).state, decide(None, failed).exit_code) == (JobState.FAILED, 3)
    done = _kjob([{"type": "Complete", "status": "True"}])
    assert (decide(done, None).state, decide(done, None).exit_code) == (JobState.COMPLETED, 0)
