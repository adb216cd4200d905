"""A PSI/J `Job` as a Kubernetes batch/v1 Job manifest (JSON, as the API server takes it).

Mapping: executable + arguments -> the container's `command`; environment -> `env`;
directory -> `workingDir`; stdin/stdout/stderr paths -> a `/bin/sh` redirection around the
command (the image must have `/bin/sh` then); ResourceSpecV1 process_count x
cpu_cores_per_process -> cpu requests and limits, memory -> memory, gpu_cores_per_process ->
the configured GPU resource; JobAttributes.duration -> `activeDeadlineSeconds`. One Pod, never
restarted (`backoffLimit: 0`, `restartPolicy: Never`). Custom attributes (all optional):

- `kubernetes.image`: container image (else the executor's default image)
- `kubernetes.namespace`: namespace (else the executor's)
- `kubernetes.service_account`: the Pod's service account
- `kubernetes.image_pull_secrets`: list of Secret names (or one name)
- `kubernetes.node_selector`: dict of node labels
- `kubernetes.volumes`: list of {"claim", "mount_path"[, "sub_path", "read_only"]} PVC mounts
- `kubernetes.env_from_secret`: a Secret name, every key of which becomes an env var
  (`envFrom`), or {"name": secret, "keys": [...]} for one `secretKeyRef` env var per key
- `kubernetes.labels`: extra labels for the Job and its Pod
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from psij import InvalidJobException, Job, JobAttributes, ResourceSpecV1

from pilot_kubernetes.k8s_model import JOB_ID_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE

ATTRIBUTE_PREFIX = "kubernetes."
KNOWN_ATTRIBUTES = frozenset(
    {
        "image",
        "namespace",
        "service_account",
        "image_pull_secrets",
        "node_selector",
        "volumes",
        "env_from_secret",
        "labels",
    }
)
CONTAINER_NAME = "main"
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class Defaults:
    """Executor-wide settings the manifest falls back to."""

    namespace: str
    image: str
    name_prefix: str = "psij"
    cpu_limits: bool = True
    gpu_resource: str = "nvidia.com/gpu"


@dataclass(frozen=True)
class Manifest:
    """A Job manifest and where it goes."""

    namespace: str
    name: str
    body: dict[str, object]


def _custom(attributes: JobAttributes | None) -> dict[str, object]:
    custom = (attributes.custom_attributes if attributes is not None else None) or {}
    out: dict[str, object] = {}
    for key, value in custom.items():
        if not key.startswith(ATTRIBUTE_PREFIX):
            continue  # another executor's attribute
        short = key[len(ATTRIBUTE_PREFIX) :]
        if short not in KNOWN_ATTRIBUTES:
            raise InvalidJobException(
                f"unknown custom attribute {key!r}; known: "
                + ", ".join(sorted(ATTRIBUTE_PREFIX + k for k in KNOWN_ATTRIBUTES))
            )
        out[short] = value
    return out


def _string(custom: dict[str, object], key: str) -> str | None:
    value = custom.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidJobException(f"{ATTRIBUTE_PREFIX}{key} must be a non-empty string")
    return value


def _string_map(custom: dict[str, object], key: str) -> dict[str, str]:
    value = custom.get(key) or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidJobException(f"{ATTRIBUTE_PREFIX}{key} must be a dict of strings")
    return dict(value)


def _string_list(custom: dict[str, object], key: str) -> list[str]:
    value = custom.get(key) or []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise InvalidJobException(f"{ATTRIBUTE_PREFIX}{key} must be a list of strings")
    return list(value)


def job_name(job: Job, prefix: str) -> str:
    """A DNS-1123 Job name: the spec's name (sanitized, shortened) or `prefix`, + the job id."""
    base = (job.spec.name if job.spec is not None and job.spec.name else None) or prefix
    base = _DNS_LABEL.sub("-", base.lower()).strip("-")[:20].strip("-") or prefix
    return f"{base}-{job.id}"


def _resources(resources: ResourceSpecV1, defaults: Defaults) -> dict[str, object]:
    if resources.computed_node_count > 1:
        raise InvalidJobException(
            f"a Kubernetes Job runs one Pod on one node: node_count must be 1 (got {resources.computed_node_count})"
        )
    processes = resources.computed_process_count
    amounts: dict[str, str] = {"cpu": str(processes * (resources.cpu_cores_per_process or 1))}
    if resources.memory:
        amounts["memory"] = str(resources.memory)
    limits = dict(amounts) if defaults.cpu_limits else {k: v for k, v in amounts.items() if k != "cpu"}
    if resources.gpu_cores_per_process:
        limits[defaults.gpu_resource] = str(processes * resources.gpu_cores_per_process)
    out: dict[str, object] = {"requests": amounts}
    if limits:
        out["limits"] = limits
    return out


def _volumes(custom: dict[str, object]) -> tuple[list[object], list[object]]:
    value = custom.get("volumes") or []
    if not isinstance(value, (list, tuple)):
        raise InvalidJobException("kubernetes.volumes must be a list of {claim, mount_path}")
    volumes: list[object] = []
    mounts: list[object] = []
    for index, item in enumerate(value):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("claim"), str)
            or not isinstance(item.get("mount_path"), str)
        ):
            raise InvalidJobException(f"kubernetes.volumes[{index}] must be a dict with 'claim' and 'mount_path'")
        name = f"volume-{index}"
        volumes.append(
            {
                "name": name,
                "persistentVolumeClaim": {"claimName": item["claim"], "readOnly": bool(item.get("read_only", False))},
            }
        )
        mount: dict[str, object] = {
            "name": name,
            "mountPath": item["mount_path"],
            "readOnly": bool(item.get("read_only", False)),
        }
        if isinstance(item.get("sub_path"), str):
            mount["subPath"] = item["sub_path"]
        mounts.append(mount)
    return volumes, mounts


def _secret_env(custom: dict[str, object]) -> tuple[list[object], list[object]]:
    """(env entries, envFrom entries) for kubernetes.env_from_secret."""
    value = custom.get("env_from_secret")
    if value is None:
        return [], []
    if isinstance(value, str) and value:
        return [], [{"secretRef": {"name": value}}]
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        keys = value.get("keys")
        if isinstance(keys, (list, tuple)) and all(isinstance(k, str) for k in keys):
            return [{"name": k, "valueFrom": {"secretKeyRef": {"name": value["name"], "key": k}}} for k in keys], []
    raise InvalidJobException("kubernetes.env_from_secret must be a Secret name or {'name': ..., 'keys': [...]}")


def _command(job: Job) -> list[str]:
    spec = job.spec
    assert spec is not None
    if not spec.executable:
        raise InvalidJobException("the job spec has no executable")
    if spec.pre_launch is not None or spec.post_launch is not None:
        raise InvalidJobException("the kubernetes executor does not run pre/post launch scripts")
    command = [spec.executable, *(str(a) for a in spec.arguments or [])]
    streams = [
        (var, op, str(path))
        for var, op, path in (("i", "<", spec.stdin_path), ("o", ">", spec.stdout_path), ("e", "2>", spec.stderr_path))
        if path is not None
    ]
    if streams:  # the paths are arguments of the script, never part of its text
        assign = "; ".join(f"{var}=${n}" for n, (var, _, _) in enumerate(streams, 1))
        redirect = " ".join(f'{op}"${var}"' for var, op, _ in streams)
        script = f'{assign}; shift {len(streams)}; exec "$@" {redirect}'
        command = ["/bin/sh", "-c", script, "sh", *(p for _, _, p in streams), *command]
    return command


def build(job: Job, defaults: Defaults) -> Manifest:
    """The batch/v1 Job manifest for `job` (raises `InvalidJobException` for what cannot map)."""
    spec = job.spec
    if spec is None:
        raise InvalidJobException("missing job specification")
    resources = spec.resources or ResourceSpecV1()
    if not isinstance(resources, ResourceSpecV1):
        raise InvalidJobException("only ResourceSpecV1 is supported")
    custom = _custom(spec.attributes)
    namespace = _string(custom, "namespace") or defaults.namespace
    name = job_name(job, defaults.name_prefix)
    labels = {**_string_map(custom, "labels"), MANAGED_BY_LABEL: MANAGED_BY_VALUE, JOB_ID_LABEL: job.id}
    env: list[object] = [{"name": k, "value": str(v)} for k, v in sorted((spec.environment or {}).items())]
    secret_env, env_from = _secret_env(custom)
    volumes, mounts = _volumes(custom)
    container: dict[str, object] = {
        "name": CONTAINER_NAME,
        "image": _string(custom, "image") or defaults.image,
        "command": _command(job),
        "env": env + secret_env,
        "resources": _resources(resources, defaults),
    }
    if env_from:
        container["envFrom"] = env_from
    if spec.directory is not None:
        container["workingDir"] = str(spec.directory)
    if mounts:
        container["volumeMounts"] = mounts
    pod: dict[str, object] = {"restartPolicy": "Never", "containers": [container]}
    account = _string(custom, "service_account")
    if account:
        pod["serviceAccountName"] = account
    pull_secrets = _string_list(custom, "image_pull_secrets")
    if pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in pull_secrets]
    selector = _string_map(custom, "node_selector")
    if selector:
        pod["nodeSelector"] = selector
    if volumes:
        pod["volumes"] = volumes
    job_spec: dict[str, object] = {
        "backoffLimit": 0,
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
    }
    duration = spec.attributes.duration if spec.attributes is not None else None
    if duration is not None and duration.total_seconds() > 0:
        job_spec["activeDeadlineSeconds"] = max(1, int(duration.total_seconds()))
    metadata: dict[str, object] = {"name": name, "namespace": namespace, "labels": labels}
    if spec.name:
        metadata["annotations"] = {"pilot/psij-job-name": spec.name}
    body: dict[str, object] = {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}
    return Manifest(namespace, name, body)
