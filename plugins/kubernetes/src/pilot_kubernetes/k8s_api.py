"""The one module that talks to the official `kubernetes` client.

Everything the executor asks of the API server goes through `KubeApi`: configuration (a
kubeconfig file and context, or the in-cluster service account), Job create/get/delete,
listing and watching Jobs and Pods in a namespace. Responses are read as raw JSON (no model
deserialization, which is slow and not needed) and handed on as the typed views of
`k8s_model`; client errors become `KubeError` (or `WatchExpired` for 410 Gone).
The `kubernetes` package is imported lazily, so importing this module (which PSI/J does for
every installed executor on `import psij`) costs nothing.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pilot_kubernetes.k8s_model import JobInfo, Meta, PodInfo

Kind = Literal["jobs", "pods"]
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class KubeError(Exception):
    """A request the API server refused or could not be sent; `status` is the HTTP status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class WatchExpired(KubeError):
    """The watch's resourceVersion is too old (410 Gone): list again, then watch from there."""


def _error(exc: BaseException) -> KubeError:
    """A `KubeError` carrying the API server's own message (the Status object's `message`)."""
    status = getattr(exc, "status", None)
    message = str(getattr(exc, "reason", None) or exc)
    body = getattr(exc, "body", None)
    if isinstance(body, (str, bytes)) and body:
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict) and isinstance(decoded.get("message"), str):
            message = decoded["message"]
    code = status if isinstance(status, int) else None
    if code == 410:
        return WatchExpired(message, code)
    return KubeError(message, code)


def in_cluster_available() -> bool:
    """True inside a Pod with a service account and no kubeconfig to prefer."""
    if os.environ.get("KUBECONFIG") or (Path.home() / ".kube" / "config").exists():
        return False
    return "KUBERNETES_SERVICE_HOST" in os.environ and SERVICE_ACCOUNT_NAMESPACE.exists()


@dataclass(frozen=True)
class Event:
    """One watch event: ADDED, MODIFIED, DELETED or BOOKMARK, and the new resourceVersion."""

    type: str
    resource_version: str | None
    job: JobInfo | None = None
    pod: PodInfo | None = None


class WatchStream:
    """An open watch request; iterate for events, `stop()` from any thread to end it."""

    def __init__(
        self, api: KubeApi, kind: Kind, namespace: str, *, selector: str, resource_version: str, timeout: int
    ) -> None:
        self._api = api
        self._kind: Kind = kind
        self._namespace = namespace
        self._selector = selector
        self._rv = resource_version
        self._timeout = timeout
        self._watch: Any = None
        self._stopped = threading.Event()

    def stop(self) -> None:
        """End the stream (shuts the socket so a blocked read returns)."""
        self._stopped.set()
        watch = self._watch
        if watch is not None:
            watch.stop()

    def __iter__(self) -> Iterator[Event]:
        """Events until the server ends the watch (timeout) or `stop()`; raises `KubeError`."""
        from kubernetes import watch

        k8s_watch: Any = watch  # untyped: confined to this module

        class _RawWatch(k8s_watch.Watch):  # type: ignore[misc]
            def get_return_type(self, func: Any) -> None:
                return None  # events as decoded JSON, with no model deserialization

        self._watch = _RawWatch()
        if self._stopped.is_set():
            return
        func = self._api.list_function(self._kind)
        try:
            for raw in self._watch.stream(
                func,
                self._namespace,
                label_selector=self._selector,
                resource_version=self._rv,
                timeout_seconds=self._timeout,
                allow_watch_bookmarks=True,
                _request_timeout=(30, self._timeout + 60),
            ):
                if self._stopped.is_set():
                    return
                yield self._event(raw)
        except Exception as exc:  # the client raises many types
            if self._stopped.is_set():
                return
            raise _error(exc) from exc

    def _event(self, raw: Mapping[str, object]) -> Event:
        obj = raw.get("raw_object", raw.get("object"))
        kind = str(raw.get("type"))
        rv = Meta.parse(obj).resource_version
        if kind == "BOOKMARK":
            return Event(kind, rv)
        if self._kind == "jobs":
            return Event(kind, rv, job=JobInfo.parse(obj))
        return Event(kind, rv, pod=PodInfo.parse(obj))


class KubeApi:
    """A configured client: kubeconfig (+ context) or the in-cluster service account."""

    def __init__(
        self,
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
        in_cluster: bool | None = None,
    ) -> None:
        from kubernetes import client
        from kubernetes import config as k8s_config

        config: Any = k8s_config  # untyped: confined to this module
        if in_cluster is None:
            in_cluster = kubeconfig is None and context is None and in_cluster_available()
        self.namespace = "default"
        if in_cluster:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            self._client: Any = client.ApiClient(configuration)
            if SERVICE_ACCOUNT_NAMESPACE.exists():
                self.namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
        else:
            path = str(kubeconfig) if kubeconfig is not None else None
            try:
                self._client = config.new_client_from_config(config_file=path, context=context, persist_config=False)
                contexts, active = config.list_kube_config_contexts(config_file=path)
            except Exception as exc:  # ConfigException, file errors
                raise KubeError(f"cannot load the kubeconfig: {exc}") from exc
            chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
            ns = (chosen or {}).get("context", {}).get("namespace")
            if isinstance(ns, str) and ns:
                self.namespace = ns
        self._batch: Any = client.BatchV1Api(self._client)
        self._core: Any = client.CoreV1Api(self._client)

    @property
    def api_client(self) -> Any:
        """The configured `kubernetes.client.ApiClient`, for callers that need other resources."""
        return self._client

    def list_function(self, kind: Kind) -> Any:
        """The client's list function for `kind` (what `Watch.stream` calls)."""
        return self._batch.list_namespaced_job if kind == "jobs" else self._core.list_namespaced_pod

    def _raw(self, func: Any, *args: object, **kwargs: object) -> dict[str, object]:
        try:
            resp = func(*args, _preload_content=False, _request_timeout=(30, 120), **kwargs)
            try:
                data = resp.read()
            finally:
                resp.release_conn()  # unread responses keep their connection otherwise
        except Exception as exc:
            raise _error(exc) from exc
        decoded = json.loads(data) if data else {}
        return decoded if isinstance(decoded, dict) else {}

    def create_job(self, namespace: str, manifest: Mapping[str, object]) -> JobInfo:
        """Create a batch/v1 Job from a JSON manifest."""
        from kubernetes import client

        body = client.V1Job.from_dict(dict(manifest))  # the official model checks the shape
        return JobInfo.parse(self._raw(self._batch.create_namespaced_job, namespace, body))

    def get_job(self, namespace: str, name: str) -> JobInfo | None:
        """The Job, or None if there is none by that name."""
        try:
            return JobInfo.parse(self._raw(self._batch.read_namespaced_job, name, namespace))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def delete_job(self, namespace: str, name: str, propagation: str) -> bool:
        """Delete a Job and (propagation Foreground/Background) its Pods; False if it was gone."""
        try:
            self._raw(self._batch.delete_namespaced_job, name, namespace, propagation_policy=propagation)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def list_jobs(self, namespace: str, selector: str | None) -> tuple[list[JobInfo], str]:
        """Jobs matching a label selector, and the list's resourceVersion to watch from."""
        body = self._raw(self._batch.list_namespaced_job, namespace, label_selector=selector)
        rv = Meta.parse(body).resource_version or ""
        items = body.get("items")
        return [JobInfo.parse(o) for o in (items if isinstance(items, list) else [])], rv

    def list_pods(self, namespace: str, selector: str | None) -> tuple[list[PodInfo], str]:
        """Pods matching a label selector, and the list's resourceVersion to watch from."""
        body = self._raw(self._core.list_namespaced_pod, namespace, label_selector=selector)
        rv = Meta.parse(body).resource_version or ""
        items = body.get("items")
        return [PodInfo.parse(o) for o in (items if isinstance(items, list) else [])], rv

    def watch(self, kind: Kind, namespace: str, selector: str, resource_version: str, timeout: int) -> WatchStream:
        """Open a watch of `kind` in `namespace` from `resource_version` for `timeout` seconds."""
        return WatchStream(self, kind, namespace, selector=selector, resource_version=resource_version, timeout=timeout)

    def close(self) -> None:
        """Release the connection pool."""
        try:
            self._client.close()
        except Exception:  # noqa: S110 - best effort at shutdown
            pass
