"""What a Kubernetes pilot's agent needs to reach the coordination store, and the Secret that
carries it to the Pod.

The agent's command line names the store by its URL, which never holds a password (stores
redact it). The password (``PILOT_REDIS_PASSWORD``) and this process's other ``PILOT_*``
settings go into a Secret the adaptor creates before the Job, under the Job's name; the Job
refers to it by name (its keys become the agent's environment through ``envFrom``), so the Job
spec and the Pod spec hold no value of it. The adaptor deletes the Secret when the pilot is
canceled and when it sees the Job end.

Where the agent can run at all is decided here too: a Pod reaches only a store on the network,
so the embedded SQLite file (or any store URL without a host) is refused at ``create_pilot``.
"""

from __future__ import annotations

import base64
import itertools
import os
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from pilot.errors import PilotError

#: Label keys on everything the adaptor creates (a DNS-label prefix, as Kubernetes requires).
LABEL_PILOT = "pilot-kubernetes/pilot-id"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
MANAGER = "pilot"  # as the executor labels its Jobs and Pods
#: ``PILOT_*`` variables that name things on this machine, or only matter here: never sent.
LOCAL_ONLY = frozenset({"PILOT_HOME", "PILOT_SITE_CONFIG", "PILOT_COORDINATION_URL", "PILOT_REDIS_CREDENTIALS",
                        "PILOT_REDIS_PASSWORD_HOSTS", "PILOT_SSH_KNOWN_HOSTS", "PILOT_SSH_IDENTITY",
                        "PILOT_SSH_CONFIG", "PILOT_AGENT_LOG", "PILOT_PSIJ_WORK_DIR"})
PASSWORD_ENV = "PILOT_REDIS_PASSWORD"  # noqa: S105 (the name of a variable)
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")  # what Kubernetes accepts as an env / Secret key
_REDIS = ("redis", "rediss")


def store_url_of(argv: tuple[str, ...]) -> str:
    """The ``--store`` value of the agent's command line."""
    for flag, value in itertools.pairwise(argv):
        if flag == "--store":
            return value
    raise PilotError("the agent command line has no --store")


def check_store(store_url: str) -> None:
    """Refuse a store a Pod cannot reach: the embedded SQLite file, or any URL without a host.
    The message says what to use instead."""
    parts = urllib.parse.urlsplit(store_url)
    if parts.scheme == "sqlite" or not parts.hostname:
        what = (f"the embedded SQLite store {urllib.parse.unquote(parts.path)}" if parts.scheme == "sqlite"
                else f"the {parts.scheme}:// store, which has no network address")
        raise PilotError(
            f"a k8s:// pilot's agent runs in a Pod, which cannot reach {what} on this machine. Use Redis: "
            "PilotComputeService(coordination_url='redis://host:port') (plugin pilot-redis) on a server that "
            "both this process and the cluster's Pods reach", key="coordination_url")


def redis_password(store_url: str, environ: Mapping[str, str]) -> str | None:
    """The password this process would use for the Redis store at ``store_url`` (the URL's,
    ``$PILOT_REDIS_PASSWORD`` for the servers it is meant for, or the credentials file)."""
    if urllib.parse.urlsplit(store_url).scheme not in _REDIS:
        return None
    try:
        from pilot_redis.config import find_password, parse_url
    except ImportError:  # without pilot-redis this process could not open the store either
        return None
    try:
        return find_password(parse_url(store_url), environ)
    except PilotError:
        return None


def agent_settings(store_url: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What goes into the pilot's Secret: this process's ``PILOT_*`` settings (log level ...)
    except those naming local things or meant for tests, and the store's password when this
    process knows it (a ``PILOT_REDIS_PASSWORD`` meant for another server is not sent)."""
    env = os.environ if environ is None else environ
    settings = {name: value for name, value in env.items()
                if name.startswith("PILOT_") and name not in LOCAL_ONLY and not name.startswith("PILOT_TEST_")}
    settings.pop(PASSWORD_ENV, None)
    password = redis_password(store_url, env)
    if password:
        settings[PASSWORD_ENV] = password
    return {name: value for name, value in settings.items() if _ENV_NAME.match(name)}


def labels(pilot_id: str) -> dict[str, str]:
    """The labels of every object the adaptor creates for ``pilot_id``."""
    return {LABEL_PILOT: pilot_id, LABEL_MANAGED: MANAGER}


def secret_body(name: str, pilot_id: str, settings: Mapping[str, str]) -> Any:
    """The Secret ``name`` (a ``kubernetes.client.V1Secret``, immutable, values base64 as the
    API stores them) holding ``settings`` for pilot ``pilot_id``."""
    from kubernetes import client

    data: dict[str, bytes | str] = {name: base64.b64encode(value.encode()).decode("ascii")
                                    for name, value in settings.items()}
    return client.V1Secret(api_version="v1", kind="Secret", type="Opaque", immutable=True, data=data,
                           metadata=client.V1ObjectMeta(name=name, labels=labels(pilot_id)))


def create_secret(api: Any, namespace: str, name: str, pilot_id: str, settings: Mapping[str, str]) -> None:
    """Create the pilot's Secret ``name`` through ``api`` (a ``CoreV1Api``). An existing one (a
    retried submission) is replaced. ``PilotError`` with the API server's message."""
    from kubernetes.client.exceptions import ApiException

    body = secret_body(name, pilot_id, settings)
    try:
        api.create_namespaced_secret(namespace, body)
    except ApiException as exc:
        if exc.status != 409:
            raise PilotError(f"cannot create Secret {namespace}/{name} for the store credentials: "
                             f"{api_message(exc)}") from None
        delete_secret(api, namespace, name)
        try:
            api.create_namespaced_secret(namespace, body)
        except ApiException as again:
            raise PilotError(f"cannot create Secret {namespace}/{name}: {api_message(again)}") from None


def delete_secret(api: Any, namespace: str, name: str) -> bool:
    """Delete Secret ``name``; True when it was there. A missing one is fine; other API errors
    raise ``PilotError``."""
    from kubernetes.client.exceptions import ApiException

    try:
        api.delete_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise PilotError(f"cannot delete Secret {namespace}/{name}: {api_message(exc)}") from None
    return True


def api_message(exc: Any) -> str:
    """The API server's own message in an ``ApiException`` (its Status ``message``), else the
    HTTP status and reason. Never the request: it could hold the Secret's data."""
    import json

    body = getattr(exc, "body", None)
    if body:
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
        if message:
            return str(message)
    return f"HTTP {getattr(exc, 'status', '?')} {getattr(exc, 'reason', '') or ''}".strip()
