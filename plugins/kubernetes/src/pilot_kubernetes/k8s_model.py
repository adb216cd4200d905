"""Typed views of the Kubernetes Job and Pod objects the executor watches, and their PSI/J state.

The API server sends JSON; these parsers read the few fields the executor needs out of the
decoded objects (plain dicts, camelCase keys) into frozen dataclasses, so nothing past this
module handles untyped data. `decide` is the whole state mapping, a pure function.
"""

from __future__ import annotations

from dataclasses import dataclass

from psij import JobState

#: Labels the executor puts on every object it creates.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "pilot"
JOB_ID_LABEL = "pilot/psij-job-id"
#: Labels the Job controller puts on its Pods (the second one since Kubernetes 1.27).
POD_JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")

#: Container waiting reasons after which the Pod will not run without someone changing it.
FATAL_WAITING_REASONS = frozenset(
    {
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)


def _dict(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Meta:
    """The metadata fields of an object that the executor reads."""

    namespace: str
    name: str
    uid: str
    resource_version: str | None
    labels: dict[str, str]
    deleting: bool

    @classmethod
    def parse(cls, obj: object) -> Meta:
        """Metadata of a decoded object."""
        meta = _dict(_dict(obj).get("metadata"))
        labels = {k: v for k, v in _dict(meta.get("labels")).items() if isinstance(v, str)}
        return cls(
            namespace=_str(meta.get("namespace")) or "",
            name=_str(meta.get("name")) or "",
            uid=_str(meta.get("uid")) or "",
            resource_version=_str(meta.get("resourceVersion")),
            labels=labels,
            deleting=meta.get("deletionTimestamp") is not None,
        )


@dataclass(frozen=True)
class Reason:
    """A Kubernetes (reason, message) pair, with an exit code where one applies."""

    reason: str
    message: str = ""
    exit_code: int | None = None

    def text(self) -> str:
        """`Reason: message` as shown in a PSI/J status message (or `Reason (exit code N)`)."""
        if self.message:
            return f"{self.reason}: {self.message}"
        if self.exit_code is not None:
            return f"{self.reason} (exit code {self.exit_code})"
        return self.reason


@dataclass(frozen=True)
class JobInfo:
    """A batch/v1 Job: metadata and its terminal condition, if any."""

    meta: Meta
    active: int
    succeeded: int
    failed: int
    complete: Reason | None
    failure: Reason | None

    @classmethod
    def parse(cls, obj: object) -> JobInfo:
        """Read a decoded Job."""
        status = _dict(_dict(obj).get("status"))
        complete = failure = None
        for item in _list(status.get("conditions")):
            cond = _dict(item)
            if cond.get("status") != "True":
                continue
            reason = Reason(_str(cond.get("reason")) or str(cond.get("type")), _str(cond.get("message")) or "")
            if cond.get("type") == "Complete":
                complete = reason
            elif cond.get("type") == "Failed":
                failure = reason
        return cls(
            meta=Meta.parse(obj),
            active=_int(status.get("active")) or 0,
            succeeded=_int(status.get("succeeded")) or 0,
            failed=_int(status.get("failed")) or 0,
            complete=complete,
            failure=failure,
        )


@dataclass(frozen=True)
class PodInfo:
    """A core/v1 Pod of a Job: phase, scheduling and its (first) container's state."""

    meta: Meta
    job_name: str | None
    phase: str
    pod_reason: Reason | None
    unschedulable: Reason | None
    waiting: Reason | None
    running: bool
    terminated: Reason | None

    @classmethod
    def parse(cls, obj: object) -> PodInfo:
        """Read a decoded Pod."""
        meta = Meta.parse(obj)
        status = _dict(_dict(obj).get("status"))
        unschedulable = None
        for item in _list(status.get("conditions")):
            cond = _dict(item)
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                unschedulable = Reason(_str(cond.get("reason")) or "Unschedulable", _str(cond.get("message")) or "")
        waiting = terminated = None
        running = False
        statuses = _list(status.get("containerStatuses"))
        if statuses:
            state = _dict(_dict(statuses[0]).get("state"))
            if "waiting" in state:
                w = _dict(state["waiting"])
                waiting = Reason(_str(w.get("reason")) or "Waiting", _str(w.get("message")) or "")
            if "running" in state:
                running = True
            if "terminated" in state:
                t = _dict(state["terminated"])
                terminated = Reason(
                    _str(t.get("reason")) or "Terminated", _str(t.get("message")) or "", _int(t.get("exitCode"))
                )
        pod_reason = None
        if _str(status.get("reason")):
            pod_reason = Reason(str(status["reason"]), _str(status.get("message")) or "")
        job_name = next((meta.labels[k] for k in POD_JOB_NAME_LABELS if k in meta.labels), None)
        return cls(
            meta=meta,
            job_name=job_name,
            phase=_str(status.get("phase")) or "Pending",
            pod_reason=pod_reason,
            unschedulable=unschedulable,
            waiting=waiting,
            running=running,
            terminated=terminated,
        )


@dataclass(frozen=True)
class Decision:
    """What the executor reports for a Job: a PSI/J state, message and exit code.

    `abandon` asks the executor to delete the Kubernetes Job because PSI/J considers it failed
    while Kubernetes would keep it pending forever (e.g. an image that cannot be pulled).
    `unschedulable` marks a QUEUED Job whose Pod the scheduler cannot place.
    """

    state: JobState
    message: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    abandon: bool = False
    unschedulable: bool = False


def _failed(reason: Reason, exit_code: int | None = None, abandon: bool = False) -> Decision:
    code = exit_code if exit_code is not None else reason.exit_code
    return Decision(JobState.FAILED, reason.text(), code, reason.reason, abandon=abandon)


def _oom(terminated: Reason) -> Reason:
    if terminated.message:
        return terminated
    return Reason(terminated.reason, "the container exceeded its memory limit", terminated.exit_code)


def decide(job: JobInfo | None, pod: PodInfo | None) -> Decision:
    """The PSI/J state of a Kubernetes Job given the latest Job and Pod seen (either may be None).

    A Failed condition wins: DeadlineExceeded as such, otherwise (BackoffLimitExceeded: the
    one Pod failed) the container's own reason, e.g. OOMKilled or Error with its exit code;
    then Complete; then the Pod: Succeeded or
    Failed, a container that cannot start (ImagePullBackOff...), Running, and otherwise QUEUED
    with the reason it waits (Unschedulable, ErrImagePull, ContainerCreating).
    """
    terminated = pod.terminated if pod is not None else None
    if job is not None and job.failure is not None:
        if job.failure.reason != "DeadlineExceeded" and terminated is not None:
            return _failed(_oom(terminated) if terminated.reason == "OOMKilled" else terminated)
        if pod is not None and pod.pod_reason is not None and job.failure.reason != "DeadlineExceeded":
            return _failed(pod.pod_reason, terminated.exit_code if terminated else None)
        return _failed(job.failure, terminated.exit_code if terminated else None)
    if job is not None and job.complete is not None:
        return Decision(JobState.COMPLETED, exit_code=0)
    if pod is None:
        return Decision(JobState.QUEUED)
    if pod.phase == "Succeeded":
        return Decision(JobState.COMPLETED, exit_code=0)
    if pod.phase == "Failed":
        if terminated is not None and terminated.reason == "OOMKilled":
            return _failed(_oom(terminated))
        if pod.pod_reason is not None:
            return _failed(pod.pod_reason, terminated.exit_code if terminated else None)
        if terminated is not None:
            return _failed(terminated)
        return _failed(Reason("Failed", "the Pod failed"))
    if pod.waiting is not None and pod.waiting.reason in FATAL_WAITING_REASONS:
        return _failed(pod.waiting, abandon=True)
    if pod.phase == "Running" and (pod.running or pod.waiting is None):
        return Decision(JobState.ACTIVE)
    if pod.unschedulable is not None:
        return Decision(JobState.QUEUED, pod.unschedulable.text(), reason=pod.unschedulable.reason, unschedulable=True)
    if pod.waiting is not None:
        return Decision(JobState.QUEUED, pod.waiting.text(), reason=pod.waiting.reason)
    return Decision(JobState.QUEUED)
