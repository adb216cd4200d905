"""One watch per namespace: the Jobs and Pods the executor manages there, as events.

`NamespaceWatch` runs two daemon threads (one stream of Jobs, one of Pods, both filtered by
the `app.kubernetes.io/managed-by=pilot` label) shared by every job of an executor in that
namespace. Each thread lists once, then watches from the list's resourceVersion; when the
server ends the watch (its `timeout_seconds`) it resumes from the last resourceVersion seen,
and when that is too old (410 Gone) or the connection fails it lists afresh, so no change is
lost. The handler gets every object of a fresh list too (`relisted`), which lets it notice
Jobs deleted while no watch was open.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from pilot_kubernetes.k8s_api import Kind, KubeApi, KubeError, WatchExpired, WatchStream
from pilot_kubernetes.k8s_model import MANAGED_BY_LABEL, MANAGED_BY_VALUE, JobInfo, PodInfo

log = logging.getLogger(__name__)
SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"


class WatchHandler(Protocol):
    """What a `NamespaceWatch` reports to (the executor)."""

    def job_event(self, event_type: str, job: JobInfo) -> None:
        """A Job was ADDED, MODIFIED or DELETED."""

    def pod_event(self, event_type: str, pod: PodInfo) -> None:
        """A Pod was ADDED, MODIFIED or DELETED."""

    def jobs_relisted(self, namespace: str, jobs: list[JobInfo], started: float) -> None:
        """A fresh list of the namespace's Jobs, requested at `time.monotonic()` `started`."""


class NamespaceWatch:
    """The Jobs and Pods of one namespace, listed then watched by two daemon threads."""

    def __init__(
        self, api: KubeApi, namespace: str, handler: WatchHandler, timeout: int = 120, retry_max: float = 30.0
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.handler = handler
        self.timeout = timeout
        self.retry_max = retry_max
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._streams: dict[Kind, WatchStream] = {}
        self._threads: list[threading.Thread] = []
        #: Completed lists per kind (initial ones and those after an expired watch).
        self.lists: dict[Kind, int] = {"jobs": 0, "pods": 0}

    def start(self) -> None:
        """Start both threads."""
        for kind in ("jobs", "pods"):
            thread = threading.Thread(
                target=self._run, args=(kind,), daemon=True, name=f"k8s-watch-{self.namespace}-{kind}"
            )
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        """Stop both threads, ending any open watch request now."""
        self._stop.set()
        with self._lock:
            streams = list(self._streams.values())
        for stream in streams:
            stream.stop()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the threads to end (after `stop`)."""
        for thread in self._threads:
            thread.join(timeout)

    @property
    def stopped(self) -> bool:
        """True once `stop` was called."""
        return self._stop.is_set()

    def _relist(self, kind: Kind) -> str:
        started = time.monotonic()
        if kind == "jobs":
            jobs, rv = self.api.list_jobs(self.namespace, SELECTOR)
            self.handler.jobs_relisted(self.namespace, jobs, started)
        else:
            pods, rv = self.api.list_pods(self.namespace, SELECTOR)
            for pod in pods:
                self.handler.pod_event("MODIFIED", pod)
        self.lists[kind] += 1
        return rv

    def _run(self, kind: Kind) -> None:
        rv: str | None = None
        delay = 0.5
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._relist(kind)
                stream = self.api.watch(kind, self.namespace, SELECTOR, rv, self.timeout)
                with self._lock:
                    if self._stop.is_set():
                        return
                    self._streams[kind] = stream
                for event in stream:
                    if event.resource_version:
                        rv = event.resource_version
                    if event.job is not None:
                        self.handler.job_event(event.type, event.job)
                    elif event.pod is not None:
                        self.handler.pod_event(event.type, event.pod)
                delay = 0.5
            except WatchExpired:
                log.info("watch of %s in %s expired: listing again", kind, self.namespace)
                rv = None
            except KubeError as exc:
                log.warning("watch of %s in %s failed (%s): retrying in %.1fs", kind, self.namespace, exc, delay)
                rv = None
                self._stop.wait(delay)
                delay = min(delay * 2, self.retry_max)
            except Exception:  # a handler bug must not end the watch for every job
                log.exception("watch of %s in %s: unexpected error", kind, self.namespace)
                rv = None
                self._stop.wait(delay)
                delay = min(delay * 2, self.retry_max)
            finally:
                with self._lock:
                    self._streams.pop(kind, None)
