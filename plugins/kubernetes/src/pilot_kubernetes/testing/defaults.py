"""Defaults and validation of the EMULATED Kubernetes API server (an emulation, not Kubernetes).

What the real API server fills in or rejects when a Job, Pod or Secret is written.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from .objects import Obj, invalid


def _default_job(job: Obj) -> None:
    meta, spec = job["metadata"], job.setdefault("spec", {})
    name, uid = meta["name"], meta["uid"]
    pod_spec = spec.get("template", {}).get("spec")
    if not pod_spec or not pod_spec.get("containers"):
        raise invalid("jobs", name, "spec.template.spec.containers", "Required value")
    if pod_spec.get("restartPolicy") not in ("Never", "OnFailure"):
        raise invalid(
            "jobs",
            name,
            "spec.template.spec.restartPolicy",
            f'Unsupported value: "{pod_spec.get("restartPolicy", "Always")}": supported values: "OnFailure", "Never"',
        )
    for key, value in (("parallelism", 1), ("completions", 1), ("backoffLimit", 6), ("suspend", False)):
        spec.setdefault(key, value)
    spec.setdefault("completionMode", "NonIndexed")
    labels = {
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": name,
        "controller-uid": uid,
        "job-name": name,
    }
    template_meta = spec["template"].setdefault("metadata", {})
    template_meta["labels"] = {**(template_meta.get("labels") or {}), **labels}
    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    meta.setdefault("labels", dict(template_meta["labels"]))
    job["status"] = {}


def _default_pod(pod: Obj) -> None:
    spec = pod.setdefault("spec", {})
    if not spec.get("containers"):
        raise invalid("pods", pod["metadata"]["name"], "spec.containers", "Required value")
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    pod["status"] = {"phase": "Pending", "qosClass": "Burstable"}


def string_data(secret: Obj) -> None:
    """Check ``data`` is base64 and fold ``stringData`` into it, as the real server does on writes."""
    data = dict(secret.get("data") or {})
    for key, value in data.items():
        try:
            base64.b64decode(str(value), validate=True)
        except binascii.Error:
            raise invalid("secrets", secret["metadata"]["name"], f"data[{key}]", "Invalid value: not base64") from None
    for key, value in (secret.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    secret["data"] = data


def _default_secret(secret: Obj) -> None:
    string_data(secret)
    secret.setdefault("type", "Opaque")


DEFAULTS: dict[str, Callable[[Obj], None]] = {"jobs": _default_job, "pods": _default_pod, "secrets": _default_secret}
