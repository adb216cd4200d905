"""PSI/J executor `kubernetes`: a PSI/J Job as a Kubernetes batch/v1 Job.

    executor = psij.JobExecutor.get_instance(
        "kubernetes", config=KubernetesExecutorConfig(kubeconfig=..., context=..., namespace=...))

Registered through PSI/J's `psij-descriptors` namespace package (see
`psij-descriptors/kubernetes_descriptor.py`). The Job mapping and custom attributes are in
`k8s_manifest`; states come from one `NamespaceWatch` per namespace (Jobs and Pods, shared by
every job of this executor in that namespace), mapped by `k8s_model.decide`: QUEUED while the
Pod is pending (with the reason as message: Unschedulable, ErrImagePull...), ACTIVE while it
runs, COMPLETED, FAILED with the Pod's or Job's reason and message (OOMKilled,
DeadlineExceeded, ImagePullBackOff...), CANCELED once the Job is deleted. Native ids are
`namespace/name`, so `attach` works from another process.
"""

from __future__ import annotations

import builtins
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from psij import (
    InvalidJobException,
    Job,
    JobExecutor,
    JobExecutorConfig,
    JobState,
    JobStatus,
    SubmitException,
)

from pilot_kubernetes.k8s_api import KubeApi, KubeError
from pilot_kubernetes.k8s_manifest import Defaults, build
from pilot_kubernetes.k8s_model import Decision, JobInfo, PodInfo, decide
from pilot_kubernetes.watch import NamespaceWatch

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "python:3.11-slim"
PROPAGATION_POLICIES = ("Foreground", "Background")


class KubernetesExecutorConfig(JobExecutorConfig):
    """Where and how the `kubernetes` executor runs jobs.

    kubeconfig / context: a kubeconfig file (default: $KUBECONFIG or ~/.kube/config) and one of
    its contexts (default: its current context). in_cluster: use the Pod's service account
    (default: when no kubeconfig is given or found and the process runs in a Pod).
    namespace: default namespace (default: the context's, or the service account's, or
    "default"). image: default container image. watch_timeout: seconds a watch request stays
    open before it is resumed. unschedulable_timeout: seconds a Pod may stay Unschedulable
    before the job FAILS and its Job is deleted (None: stay QUEUED, with the reason as message).
    propagation_policy: how `cancel` deletes (Foreground: the Job goes after its Pods).
    """

    def __init__(
        self,
        kubeconfig: str | os.PathLike[str] | None = None,
        *,
        context: str | None = None,
        namespace: str | None = None,
        in_cluster: bool | None = None,
        image: str = DEFAULT_IMAGE,
        watch_timeout: int = 120,
        unschedulable_timeout: float | None = None,
        propagation_policy: str = "Foreground",
        name_prefix: str = "psij",
        cpu_limits: bool = True,
        work_directory: Path | None = None,
        launcher_log_file: Path | None = None,
    ) -> None:
        super().__init__(launcher_log_file=launcher_log_file, work_directory=work_directory)
        if propagation_policy not in PROPAGATION_POLICIES:
            raise ValueError(f"propagation_policy must be one of {PROPAGATION_POLICIES}")
        self.kubeconfig = kubeconfig
        self.context = context
        self.namespace = namespace
        self.in_cluster = in_cluster
        self.image = image
        self.watch_timeout = watch_timeout
        self.unschedulable_timeout = unschedulable_timeout
        self.propagation_policy = propagation_policy
        self.name_prefix = name_prefix
        self.cpu_limits = cpu_limits


@dataclass(eq=False)
class _Tracked:
    """A PSI/J job this executor follows, with the latest Job and Pod seen."""

    job: Job
    namespace: str
    name: str
    job_info: JobInfo | None = None
    pod_info: PodInfo | None = None
    confirmed_at: float | None = None  # when the Job was known to exist (monotonic)
    cancel_requested: bool = False
    unschedulable_since: float | None = None
    last: tuple[JobState, str | None] = (JobState.NEW, None)
    abandon: bool = False  # delete the Job once its FAILED status is applied (Kubernetes keeps it pending)
    timers: list[threading.Timer] = field(default_factory=list)
    mirrors: list[Job] = field(default_factory=list)  # more Job objects attached to the same Job


def parse_native_id(native_id: str, default_namespace: str) -> tuple[str, str]:
    """`namespace/name` (or a bare name in the default namespace) as (namespace, name)."""
    namespace, _, name = native_id.rpartition("/")
    if not name:
        raise InvalidJobException(f"not a Kubernetes Job id: {native_id!r}")
    return namespace or default_namespace, name


class KubernetesJobExecutor(JobExecutor):
    """PSI/J executor running each job as a Kubernetes Job (one Pod); see the module doc."""

    def __init__(self, url: str | None = None, config: JobExecutorConfig | None = None) -> None:
        """Connect (kubeconfig/context or in-cluster) using a `KubernetesExecutorConfig`."""
        if not isinstance(config, KubernetesExecutorConfig):
            config = KubernetesExecutorConfig()
        super().__init__(url=url, config=config)
        self.kconfig = config
        try:
            self.api = KubeApi(config.kubeconfig, config.context, config.in_cluster)
        except KubeError as exc:
            raise SubmitException(f"kubernetes executor: {exc.message}") from exc
        self.namespace = config.namespace or self.api.namespace
        self.defaults = Defaults(
            namespace=self.namespace, image=config.image, name_prefix=config.name_prefix, cpu_limits=config.cpu_limits
        )
        self._lock = threading.RLock()
        self._tracked: dict[tuple[str, str], _Tracked] = {}
        self._watches: dict[str, NamespaceWatch] = {}

    # -- PSI/J API -------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Create the Kubernetes Job; raises InvalidJobException if the spec cannot map or the
        API server rejects it as invalid, SubmitException for other refusals."""
        self._check_job(job)
        try:
            manifest = build(job, self.defaults)
        except InvalidJobException:
            job.executor = None
            raise
        key = (manifest.namespace, manifest.name)
        tracked = _Tracked(job, *key)
        with self._lock:
            self._tracked[key] = tracked
            self._ensure_watch(manifest.namespace)
        job._native_id = f"{manifest.namespace}/{manifest.name}"
        try:
            self.api.create_job(manifest.namespace, manifest.body)
        except KubeError as exc:
            with self._lock:
                self._forget(tracked)
            message = f"Kubernetes refused Job {job._native_id}: {exc.message}"
            job._native_id = None
            job.executor = None
            if exc.status in (400, 422):
                raise InvalidJobException(message) from exc
            raise SubmitException(message) from exc
        with self._lock:
            tracked.confirmed_at = time.monotonic()
        # the watch may have reported the Job already (QUEUED with "Unschedulable: ...", or
        # ACTIVE): this first QUEUED must not overwrite what it said
        self._apply(tracked, JobStatus(JobState.QUEUED, metadata=self._meta(tracked, None)), only_if_new=True)

    def cancel(self, job: Job) -> None:
        """Delete the Job with its Pods; the job becomes CANCELED when the Job is gone."""
        if job.native_id is None or job.status.final:
            return
        key = parse_native_id(job.native_id, self.namespace)
        with self._lock:
            tracked = self._tracked.get(key)
            if tracked is None:
                return
            tracked.cancel_requested = True
        try:
            existed = self.api.delete_job(*key, propagation=self.kconfig.propagation_policy)
        except KubeError as exc:
            with self._lock:
                tracked.cancel_requested = False
            raise SubmitException(f"cannot delete Kubernetes Job {job.native_id}: {exc.message}") from exc
        if not existed:
            self._deleted(key)

    def list(self) -> list[str]:
        """Native ids of every Job in the executor's namespace."""
        jobs, _ = self.api.list_jobs(self.namespace, None)
        return [f"{j.meta.namespace or self.namespace}/{j.meta.name}" for j in jobs]

    def attach(self, job: Job, native_id: str) -> None:
        """Follow an existing Job (`namespace/name`, e.g. submitted by another process)."""
        if job.status.state != JobState.NEW:
            raise InvalidJobException("Job must be in the NEW state")
        key = parse_native_id(native_id, self.namespace)
        job.executor = self
        job._native_id = f"{key[0]}/{key[1]}"
        with self._lock:
            followed = self._tracked.get(key)
            if followed is None:
                tracked = _Tracked(job, *key)
                self._tracked[key] = tracked
                self._ensure_watch(key[0])
            else:  # already followed here: this Job object mirrors it
                followed.mirrors.append(job)
        if followed is not None:
            if followed.job.status.state != JobState.NEW:
                self._set_job_status(job, followed.job.status)
            return
        info = self.api.get_job(*key)
        if info is None:
            self._apply(
                tracked,
                JobStatus(
                    JobState.FAILED, message=f"no Kubernetes Job {job._native_id}", metadata=self._meta(tracked, None)
                ),
            )
            return
        with self._lock:
            tracked.confirmed_at = time.monotonic()
        pods, _ = self.api.list_pods(key[0], f"job-name={key[1]}")
        for pod in pods:
            self.pod_event("MODIFIED", pod)
        self.job_event("MODIFIED", info)

    # -- extensions --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every watch and release the connections; jobs still running are no longer
        followed and the executor is not to be used afterwards."""
        with self._lock:
            watches = list(self._watches.values())
            self._watches.clear()
            for tracked in self._tracked.values():
                for timer in tracked.timers:
                    timer.cancel()
        for watch in watches:
            watch.stop()
        for watch in watches:
            watch.join(5)
        self.api.close()

    def watches(self) -> dict[str, NamespaceWatch]:
        """The open watches by namespace (one per namespace with jobs being followed)."""
        with self._lock:
            return dict(self._watches)

    # -- watch handler -----------------------------------------------------------------------

    def job_event(self, event_type: str, job: JobInfo) -> None:
        """A Job changed (called by the namespace watch)."""
        key = (job.meta.namespace, job.meta.name)
        if event_type == "DELETED":
            self._deleted(key)
            return
        with self._lock:
            tracked = self._tracked.get(key)
            if tracked is None:
                return
            tracked.job_info = job
            status = self._evaluate(tracked)
            pod_unseen = self._pod_unseen(tracked)
        if status is not None and pod_unseen:
            status = self._with_pod(tracked) or status
        self._apply(tracked, status)

    @staticmethod
    def _pod_unseen(tracked: _Tracked) -> bool:
        """The Job failed for its Pod but the Pod's end has not been seen (lock held)."""
        failure = tracked.job_info.failure if tracked.job_info is not None else None
        return (
            failure is not None
            and failure.reason != "DeadlineExceeded"
            and (tracked.pod_info is None or tracked.pod_info.terminated is None)
        )

    def _with_pod(self, tracked: _Tracked) -> JobStatus | None:
        """Read the failed Job's Pod (its watch event may still be on the way) for the
        container's reason and exit code."""
        try:
            pods, _ = self.api.list_pods(tracked.namespace, f"job-name={tracked.name}")
        except KubeError as exc:
            log.warning("cannot read the Pod of %s/%s: %s", tracked.namespace, tracked.name, exc)
            return None
        ended = [p for p in pods if p.terminated is not None]
        if not ended:
            return None
        with self._lock:
            tracked.pod_info = ended[-1]
            return self._evaluate(tracked)

    def pod_event(self, event_type: str, pod: PodInfo) -> None:
        """A Pod changed (called by the namespace watch)."""
        if pod.job_name is None or event_type == "DELETED":
            return  # a Pod's deletion alone says nothing: its Job (or its deletion) will
        with self._lock:
            tracked = self._tracked.get((pod.meta.namespace, pod.job_name))
            if tracked is None:
                return
            tracked.pod_info = pod
            if self._pod_unseen(tracked):
                return  # an older Pod event: job_event reads the Pod's end itself
            status = self._evaluate(tracked)
        self._apply(tracked, status)

    def jobs_relisted(self, namespace: str, jobs: builtins.list[JobInfo], started: float) -> None:
        """A fresh list: apply each Job; a followed Job missing from it was deleted meanwhile."""
        for info in jobs:
            self.job_event("MODIFIED", info)
        listed = {j.meta.name for j in jobs}
        with self._lock:
            gone = [
                key
                for key, t in self._tracked.items()
                if key[0] == namespace
                and key[1] not in listed
                and t.confirmed_at is not None
                and t.confirmed_at < started
            ]
        for key in gone:
            self._deleted(key)

    # -- internals ---------------------------------------------------------------------------

    def _meta(self, tracked: _Tracked, decision: Decision | None) -> dict[str, object]:
        meta: dict[str, object] = {"namespace": tracked.namespace, "job_name": tracked.name}
        if tracked.pod_info is not None:
            meta["pod_name"] = tracked.pod_info.meta.name
        if decision is not None and decision.reason:
            meta["reason"] = decision.reason
        return meta

    def _evaluate(self, tracked: _Tracked) -> JobStatus | None:
        """The status to report now (called with the lock held), or None for no change."""
        if tracked.cancel_requested or (tracked.job_info is not None and tracked.job_info.meta.deleting):
            return None  # being deleted: CANCELED when the Job is gone
        decision = decide(tracked.job_info, tracked.pod_info)
        if decision.unschedulable:
            decision = self._unschedulable(tracked, decision)
        else:
            tracked.unschedulable_since = None
        status = JobStatus(
            decision.state,
            message=decision.message,
            exit_code=decision.exit_code,
            metadata=self._meta(tracked, decision),
        )
        tracked.abandon = decision.abandon
        return status

    def _unschedulable(self, tracked: _Tracked, decision: Decision) -> Decision:
        limit = self.kconfig.unschedulable_timeout
        if limit is None:
            return decision
        now = time.monotonic()
        if tracked.unschedulable_since is None:
            tracked.unschedulable_since = now
            timer = threading.Timer(limit, self._recheck, args=(tracked,))
            timer.daemon = True
            tracked.timers.append(timer)
            timer.start()
        if now - tracked.unschedulable_since < limit:
            return decision
        return Decision(JobState.FAILED, decision.message, reason=decision.reason, abandon=True)

    def _recheck(self, tracked: _Tracked) -> None:
        with self._lock:
            if self._tracked.get((tracked.namespace, tracked.name)) is not tracked:
                return
            status = self._evaluate(tracked)
        self._apply(tracked, status)

    def _abandon(self, tracked: _Tracked) -> None:
        """Delete a Job PSI/J has failed but Kubernetes would keep pending."""
        try:
            self.api.delete_job(tracked.namespace, tracked.name, "Background")
        except KubeError as exc:
            log.warning("cannot delete failed Job %s/%s: %s", tracked.namespace, tracked.name, exc)

    def _deleted(self, key: tuple[str, str]) -> None:
        with self._lock:
            tracked = self._tracked.get(key)
            if tracked is None:
                return
            message = None if tracked.cancel_requested else f"the Kubernetes Job {key[0]}/{key[1]} was deleted"
            status = JobStatus(JobState.CANCELED, message=message, metadata=self._meta(tracked, None))
        self._apply(tracked, status)

    def _apply(self, tracked: _Tracked, status: JobStatus | None, *, only_if_new: bool = False) -> None:
        if status is None:
            return
        with self._lock:
            if (status.state, status.message) == tracked.last or (only_if_new and tracked.last[0] != JobState.NEW):
                return
            tracked.last = (status.state, status.message)
            if status.final:
                self._forget(tracked)
            jobs = [tracked.job, *tracked.mirrors]
        for job in jobs:
            if status.state == job.status.state and not status.final:
                self._replace_message(job, status)
            else:
                self._set_job_status(job, status)
        if status.final and tracked.abandon:  # only now: its deletion must not read as a cancel
            threading.Thread(target=self._abandon, args=(tracked,), daemon=True).start()

    def _replace_message(self, job: Job, status: JobStatus) -> None:
        """Report a new message in the same state (PSI/J's setter ignores same-state updates)."""
        with job._status_cv:
            if job._status.state != status.state:
                return
            job._status = status
            job._status_cv.notify_all()
        if job._cb is not None:
            try:
                job._cb.job_status_changed(job, status)
            except Exception as exc:  # as PSI/J does for callbacks
                log.warning("status callback for %s failed: %s", job.id, exc)
        self._notify_callback(job, status)

    def _forget(self, tracked: _Tracked) -> None:
        """Stop following a job (lock held); the namespace's watch ends with its last job."""
        key = (tracked.namespace, tracked.name)
        if self._tracked.get(key) is tracked:
            del self._tracked[key]
        for timer in tracked.timers:
            timer.cancel()
        if not any(k[0] == tracked.namespace for k in self._tracked):
            watch = self._watches.pop(tracked.namespace, None)
            if watch is not None:
                watch.stop()

    def _ensure_watch(self, namespace: str) -> None:
        """Start the namespace's watch unless it runs (lock held)."""
        watch = self._watches.get(namespace)
        if watch is None or watch.stopped:
            watch = NamespaceWatch(self.api, namespace, self, timeout=self.kconfig.watch_timeout)
            self._watches[namespace] = watch
            watch.start()
