"""The EMULATED job controller and garbage collector (an emulation for tests, not Kubernetes).

A thread that reconciles every batch/v1 Job whenever the emulated cluster's state changes
(and a few times a second for deadlines): one Pod per Job from its template (labelled
``job-name``/``controller-uid``, owned by the Job), a replacement Pod after a failure until
``backoffLimit`` is exceeded, ``activeDeadlineSeconds`` (the Job fails with reason
``DeadlineExceeded`` and its Pods are deleted, which makes the kubelet kill them), status
``active``/``ready``/``succeeded``/``failed``/``startTime``/``completionTime``, the conditions
``SuccessCriteriaMet`` + ``Complete`` or ``FailureTarget`` + ``Failed`` as Kubernetes 1.31+ sets
them, and ``ttlSecondsAfterFinished``. Only ``completions: 1`` Jobs are modelled, retries come
at once (no back-off delay), and ``restartPolicy: OnFailure`` retries with a new Pod like ``Never``.
"""

from __future__ import annotations

import copy
import logging
import threading
import time

from .objects import ApiError, Obj, now, parse_time
from .state import ClusterState

log = logging.getLogger(__name__)


def condition(kind: str, reason: str, message: str) -> Obj:
    """A Job condition with status True, as the real controller writes it."""
    stamp = now()
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": stamp,
        "lastTransitionTime": stamp,
    }


def finished(job: Obj) -> str | None:
    """``Complete`` or ``Failed`` when the Job has that condition True, else None."""
    for cond in job.get("status", {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return str(cond["type"])
    return None


def _ready(pod: Obj) -> bool:
    return any(
        cond.get("type") == "Ready" and cond.get("status") == "True"
        for cond in pod.get("status", {}).get("conditions") or []
    )


class JobController:
    """Reconciles Jobs into Pods and status in the emulated cluster (not Kubernetes)."""

    def __init__(self, state: ClusterState) -> None:
        self._state = state
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emulated-job-controller", daemon=True)
        # job uid -> uids of its Pods already counted as succeeded / failed
        self._counted: dict[str, dict[str, str]] = {}

    def start(self) -> None:
        """Start the controller thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the controller thread."""
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        seen = -1
        while not self._stop.is_set() and not self._state.closed:
            seen = self._state.wait_for_change(seen, 0.2)
            try:
                self.reconcile()
                self._state.collect_garbage()
            except ApiError:
                log.debug("emulated job controller: object changed underneath, retrying", exc_info=True)
            except Exception:  # a bug here must not silently stop every job
                log.exception("emulated job controller failed a reconcile pass")

    def reconcile(self) -> None:
        """One pass over every Job."""
        jobs, _ = self._state.list_objects("jobs", None)
        pods, _ = self._state.list_objects("pods", None)
        for job in jobs:
            uid = job["metadata"]["uid"]
            mine = [
                pod for pod in pods if uid in [ref.get("uid") for ref in pod["metadata"].get("ownerReferences") or []]
            ]
            self._reconcile_job(job, mine)
        live = {job["metadata"]["uid"] for job in jobs}
        for uid in list(self._counted):
            if uid not in live:
                del self._counted[uid]

    def _reconcile_job(self, job: Obj, pods: list[Obj]) -> None:
        meta, spec, status = job["metadata"], job["spec"], job.get("status", {})
        if meta.get("deletionTimestamp"):
            return
        outcome = finished(job)
        if outcome:
            self._expire(job, outcome)
            return
        if spec.get("suspend"):
            return
        counted = self._counted.setdefault(meta["uid"], {})
        for pod in pods:
            phase = pod.get("status", {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                counted.setdefault(pod["metadata"]["uid"], phase)
        succeeded = sum(1 for phase in counted.values() if phase == "Succeeded")
        failed = sum(1 for phase in counted.values() if phase == "Failed")
        active = [
            pod
            for pod in pods
            if pod.get("status", {}).get("phase") in ("Pending", "Running")
            and not pod["metadata"].get("deletionTimestamp")
        ]
        started = status.get("startTime")
        deadline = spec.get("activeDeadlineSeconds")
        new: Obj = {
            "active": len(active) or None,
            "ready": sum(1 for pod in active if _ready(pod)),
            "terminating": sum(1 for pod in pods if pod["metadata"].get("deletionTimestamp")) or None,
            "succeeded": succeeded or None,
            "failed": failed or None,
            "startTime": started or now(),
        }
        conditions: list[Obj] = []
        if succeeded >= int(spec.get("completions") or 1):
            conditions = [
                condition("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"),
                condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods"),
            ]
            new["completionTime"] = now()
        elif deadline is not None and started and time.time() - parse_time(started) >= float(deadline):
            message = "Job was active longer than specified deadline"
            conditions = [
                condition("FailureTarget", "DeadlineExceeded", message),
                condition("Failed", "DeadlineExceeded", message),
            ]
            new["failed"] = failed + len(active) or None
        elif failed > int(spec.get("backoffLimit", 6)):
            message = "Job has reached the specified backoff limit"
            conditions = [
                condition("FailureTarget", "BackoffLimitExceeded", message),
                condition("Failed", "BackoffLimitExceeded", message),
            ]
        if conditions:
            new.update(active=None, ready=0, conditions=conditions)
            for pod in active:
                self._delete_pod(pod)
        elif not active and not succeeded:
            self._create_pod(job)
            new["active"] = 1

        def write(obj: Obj) -> None:
            merged = {**obj.get("status", {}), **new}
            obj["status"] = {key: value for key, value in merged.items() if value is not None}

        self._state.mutate("jobs", meta["namespace"], meta["name"], write)

    def _create_pod(self, job: Obj) -> None:
        meta, template = job["metadata"], job["spec"]["template"]
        pod_meta = copy.deepcopy(template.get("metadata") or {})
        pod_meta.pop("name", None)
        pod_meta["generateName"] = f"{meta['name']}-"
        pod_meta["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        self._state.create("pods", meta["namespace"], {"metadata": pod_meta, "spec": copy.deepcopy(template["spec"])})

    def _delete_pod(self, pod: Obj) -> None:
        try:
            self._state.delete("pods", pod["metadata"]["namespace"], pod["metadata"]["name"], "Background", None)
        except ApiError:
            pass  # already gone

    def _expire(self, job: Obj, outcome: str) -> None:
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        stamp = job["status"].get("completionTime") or next(
            (c["lastTransitionTime"] for c in job["status"].get("conditions", []) if c["type"] == outcome), None
        )
        if ttl is not None and stamp and time.time() - parse_time(stamp) >= float(ttl):
            meta = job["metadata"]
            self._state.delete("jobs", meta["namespace"], meta["name"], "Background", None)
