"""The Kubernetes resource adaptor ``k8s://[context]/[namespace]``: one pilot is one ``batch/v1``
Job whose single Pod runs the agent, submitted, watched and deleted through this distribution's
PSI/J executor ``kubernetes`` (``pilot_kubernetes.psij_executor``).

- The context is the kubeconfig's (``$KUBECONFIG``, else ``~/.kube/config``) named one; an empty
  context means the kubeconfig's current context, or the in-cluster service account when there is
  no kubeconfig. The namespace is the URL's, else the context's, else ``default``.
- The Pod asks for ``number_of_processes`` CPUs (times ``extra.cpu_cores_per_process``); the
  agent gets that many slots on the Pod's node.
- The image: the description's ``extra.image``, else the site resource's ``extra.image`` (the
  resource the description names, or one whose ``service_url`` is this URL), else
  ``DEFAULT_IMAGE`` (built from the plugin's ``Dockerfile``). The agent runs with
  ``extra.python`` (else the resource's ``python``, else ``python3`` on the image's ``PATH``).
- The walltime becomes the Job's ``activeDeadlineSeconds`` plus a grace (the agent drains at the
  walltime itself); ``extra.active_deadline_seconds`` sets that hard limit directly.
- The agent reaches the store over the network: the embedded SQLite store is refused by
  ``check`` (so ``create_pilot`` raises). Its credentials reach the Pod through a Secret
  (``pilot_kubernetes.credentials``) of the Job's name, deleted once the agent's container runs
  (the executor's watch says so), on cancel, and when the Job is seen to end.
- A Pod the scheduler cannot place stays ``Pending`` for ``extra.unschedulable_timeout`` seconds
  (default 300, for an autoscaler to add a node), then the pilot fails with the scheduler's
  message and its Job is deleted.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pilot.errors import PilotError
from pilot.plugin.types import NativeStatus, PilotJobRequest
from pilot.states import State
from pilot_kubernetes import credentials

#: The image that runs the agent when neither the description nor the site names one.
DEFAULT_IMAGE = "pilot-agent:0.1.0"
#: The Python that runs the agent when neither the description nor the site names one.
DEFAULT_PYTHON = "python3"
#: Seconds a Pod may stay unschedulable before its pilot fails.
DEFAULT_UNSCHEDULABLE_TIMEOUT = 300.0
#: Seconds past the walltime before Kubernetes ends the Job (the agent drains before it).
DEADLINE_GRACE = 60.0
#: Plain ``extra`` keys this adaptor understands (``kubernetes.*`` keys go to the executor).
EXTRA_KEYS = {
    "image": "the container image that runs the agent",
    "python": "the Python in the image that runs the agent (default python3)",
    "cpu_cores_per_process": "CPUs per slot (the Pod asks for number_of_processes times this)",
    "drain_margin": "seconds before the walltime at which the agent drains (default: 5% of it, 1-120 s)",
    "active_deadline_seconds": "the Job's hard time limit (default: the walltime plus 60 s; none without one)",
    "unschedulable_timeout": "seconds a Pod may stay unschedulable before the pilot fails (default 300)",
}
#: ``kubernetes.*`` custom attributes a description may set (the others are the adaptor's own).
CUSTOM_KEYS = frozenset({"kubernetes.service_account", "kubernetes.image_pull_secrets", "kubernetes.node_selector",
                         "kubernetes.volumes", "kubernetes.labels"})
_CONTEXTS_ENV = "KUBECONFIG"
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
log = logging.getLogger(__name__)
_STATES = {"QUEUED": State.Pending, "ACTIVE": State.Running, "COMPLETED": State.Done, "FAILED": State.Failed,
           "CANCELED": State.Canceled}


@dataclasses.dataclass(frozen=True)
class Target:
    """Where ``k8s://[context]/[namespace]`` points: a kubeconfig context (None: the current
    one, or in-cluster) and a namespace (None: the context's, else ``default``)."""

    context: str | None
    namespace: str | None


def parse_service_url(service_url: str) -> Target:
    """Parse ``k8s://[context]/[namespace]``. The namespace is after the last ``/`` (context names
    such as EKS ARNs hold slashes); both parts may be percent-encoded."""
    scheme, sep, rest = service_url.partition("://")
    if scheme != "k8s" or not sep:
        raise PilotError(f"not a Kubernetes service URL: {service_url!r} (expected k8s://[context]/[namespace])",
                         key="service_url")
    if "?" in rest or "#" in rest:
        raise PilotError(f"{service_url!r}: a k8s:// URL takes no query or fragment (expected "
                         "k8s://[context]/[namespace])", key="service_url")
    context, _, namespace = rest.rpartition("/") if "/" in rest else (rest, "", "")
    context, namespace = urllib.parse.unquote(context), urllib.parse.unquote(namespace)
    if namespace and not _NAMESPACE.match(namespace):
        raise PilotError(f"{service_url!r}: {namespace!r} is not a Kubernetes namespace name (lower-case letters, "
                         "digits and '-', at most 63)", key="service_url")
    return Target(context or None, namespace or None)


def _field(description: Any, key: str) -> Any:
    value = getattr(description, key, None)
    if value is None and isinstance(description, Mapping):
        value = description.get(key)
    return value


def _seconds(extra: Mapping[str, Any], key: str, default: float | None) -> float | None:
    value = extra.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise PilotError(f"extra key {key!r} must be a non-negative number of seconds, got {value!r}", key=key)
    return float(value)


def site_resource(request: PilotJobRequest) -> Any:
    """The site resource the description names, or one whose ``service_url`` is the same URL."""
    from pilot.site import load_resources

    desc = request.description
    resources = load_resources()
    named = _field(desc, "resource")
    if named:
        return resources.get(named)
    url = str(_field(desc, "service_url"))
    return next((r for _, r in sorted(resources.items()) if r.defaults.get("service_url") == url), None)


@dataclasses.dataclass(frozen=True)
class JobSettings:
    """What the adaptor makes of a pilot description: the checked plain keys and custom attributes."""

    image: str
    python: str
    pre_commands: tuple[str, ...]
    cores_per_slot: int | None
    drain_margin: float | None
    deadline: float | None
    unschedulable_timeout: float
    custom: Mapping[str, Any]


def job_settings(request: PilotJobRequest) -> JobSettings:
    """Check the description's keys for a Kubernetes pilot (``PilotError`` naming the key)."""
    desc = request.description
    extra = dict(_field(desc, "extra") or {})
    custom = {}
    for key, value in extra.items():
        if key in CUSTOM_KEYS:
            custom[key] = value
        elif key not in EXTRA_KEYS:
            known = ", ".join([*sorted(EXTRA_KEYS), *sorted(CUSTOM_KEYS)])
            raise PilotError(f"unknown extra key {key!r} for a k8s:// pilot (known: {known})", key=key)
    ppn = _field(desc, "processes_per_node")
    slots = int(_field(desc, "number_of_processes") or 1)
    if ppn and int(ppn) < slots:
        raise PilotError(f"a k8s:// pilot is one Pod on one node: processes_per_node ({ppn}) must not be less "
                         f"than number_of_processes ({slots})", key="processes_per_node")
    site = None
    python: str | None = request.agent_argv[0] if request.agent_argv[0] != sys.executable else None
    pre = tuple(request.pre_commands)
    if "image" not in extra or (python is None and "python" not in extra):
        site = site_resource(request)
    if site is not None:
        python = python or site.python
        pre = pre or tuple(site.pre_commands)
    image = extra.get("image") or (site.defaults.get("extra", {}).get("image") if site is not None else None)
    chosen = extra.get("python") or python or DEFAULT_PYTHON
    for key, value in (("image", image or DEFAULT_IMAGE), ("python", chosen)):
        if not isinstance(value, str) or not value.strip():
            raise PilotError(f"extra.{key} must be a non-empty string, got {value!r}", key=key)
    cores = extra.get("cpu_cores_per_process")
    if cores is not None and (isinstance(cores, bool) or not isinstance(cores, int) or cores < 1):
        raise PilotError(f"extra key 'cpu_cores_per_process' must be a positive integer, got {cores!r}",
                         key="cpu_cores_per_process")
    walltime = _field(desc, "walltime")
    margin = None
    if walltime:
        margin = _seconds(extra, "drain_margin", min(120.0, max(1.0, walltime * 60 * 0.05)))
    deadline = _seconds(extra, "active_deadline_seconds", walltime * 60 + DEADLINE_GRACE if walltime else None)
    if deadline is not None and deadline < 1:
        raise PilotError("extra key 'active_deadline_seconds' must be at least 1", key="active_deadline_seconds")
    unschedulable = _seconds(extra, "unschedulable_timeout", DEFAULT_UNSCHEDULABLE_TIMEOUT)
    return JobSettings(str(image or DEFAULT_IMAGE), str(chosen), pre, cores, margin,
                       None if deadline is None else math.ceil(deadline),
                       DEFAULT_UNSCHEDULABLE_TIMEOUT if unschedulable is None else unschedulable, custom)


def agent_command(request: PilotJobRequest, settings: JobSettings) -> list[str]:
    """The container's command: the agent, after the site's ``pre_commands`` when there are any
    (a shell runs them, then ``exec``\\ s the agent with its arguments as ``"$@"``)."""
    argv = [settings.python, *request.agent_argv[1:]]
    if settings.drain_margin is not None:
        argv += ["--drain-margin", f"{settings.drain_margin:g}"]
    if not settings.pre_commands:
        return argv
    script = "".join(f"{command}\n" for command in settings.pre_commands) + 'exec "$@"\n'
    return ["/bin/sh", "-c", script, "pilot-agent", *argv]


def build_job(request: PilotJobRequest, settings: JobSettings) -> Any:
    """The PSI/J job that runs the pilot's agent in one Pod (the Secret is added once the Job's
    name is known: it is named the same)."""
    from psij import Job, JobAttributes, JobSpec, ResourceSpecV1

    command = agent_command(request, settings)
    custom: dict[str, object] = {**settings.custom, "kubernetes.image": settings.image}
    custom["kubernetes.labels"] = {**dict(settings.custom.get("kubernetes.labels") or {}),
                                   **credentials.labels(request.pilot_id)}
    attributes = JobAttributes(custom_attributes=custom)
    attributes.duration = (timedelta(seconds=settings.deadline) if settings.deadline is not None
                           else None)  # type: ignore[assignment]
    resources = ResourceSpecV1(process_count=int(_field(request.description, "number_of_processes") or 1),
                               cpu_cores_per_process=settings.cores_per_slot)
    spec = JobSpec(executable=command[0], arguments=command[1:], name=request.pilot_id,
                   environment=dict(request.environment) or None, inherit_environment=False,
                   resources=resources, attributes=attributes)
    return Job(spec)


class KubernetesAdaptor:
    """Submits, watches and deletes pilot Jobs in one context and namespace (one per
    ``service_url`` and session); the executor, and its one watch per namespace, is made on
    first use. Native ids are the executor's, ``namespace/job-name``; the pilot's Secret has
    its Job's name, so any process holding the native id can delete both."""

    def __init__(self, service_url: str) -> None:
        self.service_url = service_url
        self.target = parse_service_url(service_url)
        self._executor: Any = None
        self._core: Any = None
        self._jobs: dict[str, Any] = {}
        self._unschedulable: dict[str, tuple[float, float]] = {}  # native id -> (since, timeout)
        self._cleaned: set[str] = set()
        self._lock = threading.RLock()

    # --- the executor and the API ------------------------------------------------------
    def executor(self) -> Any:
        """The PSI/J ``kubernetes`` executor for this context and namespace."""
        with self._lock:
            if self._executor is None:
                from psij import JobExecutor

                from pilot_kubernetes.psij_executor import KubernetesExecutorConfig

                # $KUBECONFIG read now (the client reads it once, when first imported)
                config = KubernetesExecutorConfig(os.environ.get("KUBECONFIG") or None, context=self.target.context,
                                                  namespace=self.target.namespace, image=DEFAULT_IMAGE,
                                                  name_prefix="pilot")
                try:
                    self._executor = JobExecutor.get_instance("kubernetes", config=config)
                except Exception as exc:  # PSI/J wraps the executor's own error: show that one
                    cause = exc.__cause__ or exc
                    raise PilotError(f"cannot use Kubernetes for {self.service_url}: {cause}") from None
            return self._executor

    def core_api(self) -> Any:
        """A ``CoreV1Api`` on the executor's connection (for the pilots' Secrets)."""
        with self._lock:
            if self._core is None:
                from kubernetes import client

                self._core = client.CoreV1Api(self.executor().api.api_client)
            return self._core

    def close(self) -> None:
        """Stop the executor's watches and close its connections (jobs are no longer followed)."""
        with self._lock:
            executor, self._executor, self._core = self._executor, None, None
            self._jobs.clear()
        if executor is not None:
            executor.close()

    # --- the adaptor ---------------------------------------------------------------------
    def check(self, request: PilotJobRequest) -> JobSettings:
        """Refuse, before anything is stored or submitted, a pilot this adaptor can never run: a
        store the Pod cannot reach, or a description key Kubernetes pilots do not take."""
        credentials.check_store(credentials.store_url_of(request.agent_argv))
        return job_settings(request)

    def submit(self, request: PilotJobRequest) -> str:
        """Create the Secret, then the Job; return the Job's native id. ``PilotError`` with the API
        server's message when it refuses either (the Secret is then deleted)."""
        settings = self.check(request)
        values = credentials.agent_settings(credentials.store_url_of(request.agent_argv))
        executor = self.executor()  # imports psij first: it loads the executor's modules itself
        from pilot_kubernetes.k8s_manifest import job_name

        namespace = str(executor.namespace)
        job = build_job(request, settings)
        name = job_name(job, executor.defaults.name_prefix)  # the Job's name, known before it exists
        if values:
            credentials.create_secret(self.core_api(), namespace, name, request.pilot_id, values)
            job.spec.attributes.custom_attributes = {**job.spec.attributes.custom_attributes,
                                                     "kubernetes.env_from_secret": name}
        job.set_job_status_callback(self._status_changed)
        try:
            executor.submit(job)
        except Exception as exc:
            if values:
                self._drop_secret(namespace, name)
            message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            raise PilotError(message or f"Kubernetes refused the pilot job ({type(exc).__name__})") from None
        native_id = str(job.native_id or "")
        if not native_id:
            raise PilotError("Kubernetes accepted the pilot job but gave no name for it")
        with self._lock:
            self._jobs[native_id] = job
            self._unschedulable[native_id] = (0.0, settings.unschedulable_timeout)
        return native_id

    def _job(self, native_id: str) -> Any:
        """The PSI/J job for ``native_id``: the one submitted here, else one attached to it."""
        with self._lock:
            job = self._jobs.get(native_id)
            if job is None:
                from psij import Job

                job = Job()
                job.set_job_status_callback(self._status_changed)
                self.executor().attach(job, native_id)
                self._jobs[native_id] = job
            return job

    def status(self, native_id: str) -> NativeStatus:
        """The Job's state as the executor's watch last saw it; the Secret goes once it ended."""
        status = self._job(native_id).status
        state = _STATES.get(getattr(status.state, "name", str(status.state)), State.Unknown)
        message = (status.message or "").strip()
        if state in (State.Running, State.Done, State.Failed, State.Canceled):
            self._cleanup(native_id)
        if state is State.Failed:
            if not message and status.exit_code is not None:
                message = f"the agent's container exited with code {status.exit_code}"
            return NativeStatus(State.Failed, f"Kubernetes Job {native_id} failed: {message or 'no reason given'}")
        if state is State.Pending and (status.metadata or {}).get("reason") == "Unschedulable":
            return self._unschedulable_status(native_id, message)
        if state is State.Unknown:
            return NativeStatus(State.Unknown, f"Kubernetes Job {native_id}: not seen yet")
        return NativeStatus(state, message)

    def _unschedulable_status(self, native_id: str, message: str) -> NativeStatus:
        """Pending while the Pod has been unschedulable for less than its timeout, then Failed
        (the caller then cancels the pilot, which deletes the Job)."""
        now = time.monotonic()
        with self._lock:
            since, timeout = self._unschedulable.get(native_id, (0.0, DEFAULT_UNSCHEDULABLE_TIMEOUT))
            if not since:
                since = now
                self._unschedulable[native_id] = (since, timeout)
        if now - since >= timeout:
            return NativeStatus(State.Failed, f"Kubernetes cannot schedule the pilot's Pod (Job {native_id}) "
                                              f"after {timeout:g} s: {message}")
        return NativeStatus(State.Pending, message)

    def cancel(self, native_id: str) -> None:
        """Delete the Job (its Pods go with it) and the pilot's Secret; gone ones are fine."""
        job = self._job(native_id)
        try:
            self.executor().cancel(job)
        except Exception as exc:
            raise PilotError(f"deleting Kubernetes Job {native_id} failed: {str(exc).strip()}") from None
        finally:
            self._cleanup(native_id, strict=True)

    def _status_changed(self, job: Any, status: Any) -> None:
        """The executor's watch saw the Job change: once its container runs (its environment is
        then set for good: it never restarts) or it ended, the Secret is no longer needed."""
        if getattr(status.state, "name", "") in ("ACTIVE", "COMPLETED", "FAILED", "CANCELED") and job.native_id:
            threading.Thread(target=self._cleanup, args=(str(job.native_id),), daemon=True,
                             name="pilot-k8s-secret-cleanup").start()

    def _cleanup(self, native_id: str, strict: bool = False) -> None:
        """Delete the pilot's Secret (named as its Job) unless this process already did. A
        failure is raised when ``strict`` (cancel), else logged and tried again later."""
        namespace, _, name = native_id.rpartition("/")
        with self._lock:
            if not name or native_id in self._cleaned:
                return
        try:  # two threads may both get here: the second delete finds nothing, which is fine
            credentials.delete_secret(self.core_api(), namespace or str(self.executor().namespace), name)
        except Exception as exc:
            if strict:
                raise
            log.warning("cannot delete the pilot's Secret yet: %s", exc)
            return
        with self._lock:
            self._cleaned.add(native_id)

    def _drop_secret(self, namespace: str, name: str) -> None:
        try:
            credentials.delete_secret(self.core_api(), namespace, name)
        except PilotError as exc:
            log.warning("cannot delete the Secret of a refused pilot job: %s", exc)
