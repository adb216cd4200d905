"""The EMULATED scheduler + kubelet of one node (an emulation for tests, not Kubernetes).

A thread that watches the Pods in the emulated cluster's state (no HTTP) and, for each one:
schedules it on the node ``emulated-node`` or marks it ``PodScheduled=False``/``Unschedulable``
(image ``fault/unschedulable``, a cpu request above the node's CPUs, or a ``nodeSelector`` the
node's labels do not match); then runs its first container's ``command`` + ``args`` as a local
process (the image is ignored; ``args`` alone run as the command) under a shim (:mod:`.shim`,
which ends every process of the container, whatever its session, when the main process ends or
the container is killed, as a PID namespace does), with the container's ``env`` and ``envFrom``
(values, ``secretKeyRef``, ``fieldRef``; a missing Secret gives ``CreateContainerConfigError``)
over a minimal base environment (:func:`default_base_env`), in ``workingDir`` (or a sandbox of
its own), output to a log file the API serves as the Pod's log. Pod status moves through
Pending, Running, Succeeded/Failed with container states running/terminated (``Completed``,
``Error``, ``StartError``, ``OOMKilled``). Faults by image: ``fault/image-pull`` waits in
``ErrImagePull`` then ``ImagePullBackOff`` and never runs; ``fault/oom`` runs, then the
container is killed and reported ``OOMKilled``, exit 137. A Pod's own ``activeDeadlineSeconds``
fails it with reason ``DeadlineExceeded``. Deleting a Pod sends SIGTERM to its main process,
kills the container after the grace period, then removes the Pod. Volumes, init containers,
probes, restarts and other Pods' cpu requests are not modelled.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .objects import ApiError, Obj, cpu_quantity, now
from .state import ClusterState

log = logging.getLogger(__name__)

NODE = "emulated-node"
BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME")
SHIM = Path(__file__).with_name("shim.py")
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


#: The Pod status an activeDeadlineSeconds kill leaves, as the real kubelet words it.
_DEADLINE = ("DeadlineExceeded", "Pod was active on the node longer than the specified deadline")


@dataclass
class _Container:
    """A running container process (one per Pod)."""

    namespace: str
    name: str
    uid: str
    process: subprocess.Popen[bytes]
    started: str
    image: str
    killed_for: str | None = None  # "oom", "deadline" or "deleted"
    timers: list[threading.Timer] = field(default_factory=list)


class ConfigError(Exception):
    """The container cannot be configured (``CreateContainerConfigError``)."""


def default_base_env() -> dict[str, str]:
    """What the emulated "image" provides: a few variables of this host (PATH, HOME, locale),
    with the running interpreter's directory first on PATH, as the documented image has pilot
    on PATH. Nothing else of the caller's environment (no credentials) leaks into Pods."""
    env = {key: os.environ[key] for key in BASE_ENV_KEYS if key in os.environ}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    return env


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` references in command, args and env values (``$$`` escapes)."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(one, text)


class Kubelet:
    """Schedules and runs the emulated cluster's Pods as local processes (not Kubernetes)."""

    def __init__(
        self,
        state: ClusterState,
        workdir: Path,
        server_port: int,
        cpus: float = 8,
        base_env: dict[str, str] | None = None,
    ) -> None:
        self._state = state
        self._workdir = workdir
        self._port = server_port
        self.cpus = cpus
        self.node_labels = {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
        self.oom_after = 0.5
        self.pull_backoff_after = 0.5
        self._base_env = base_env if base_env is not None else default_base_env()
        self._running: dict[str, _Container] = {}
        self._pulling: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emulated-kubelet", daemon=True)

    def log_path(self, namespace: str, name: str) -> Path:
        """Where a Pod's output goes (what ``GET .../pods/{name}/log`` serves)."""
        return self._workdir / "logs" / f"{namespace}_{name}.log"

    def start(self) -> None:
        """Start the kubelet thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and kill every container still running (all its processes)."""
        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:
            containers = list(self._running.values())
        for container in containers:
            self._signal(container, signal.SIGKILL)
            for timer in container.timers:
                timer.cancel()
        for container in containers:
            try:
                container.process.wait(timeout=20)
            except subprocess.TimeoutExpired:  # a wedged shim: its session at least goes
                os.killpg(container.process.pid, signal.SIGKILL)
                container.process.wait()

    def pids(self) -> dict[str, int]:
        """Process id per running Pod name (``namespace/name``), for tests."""
        with self._lock:
            return {f"{c.namespace}/{c.name}": c.process.pid for c in self._running.values()}

    # --- loop --------------------------------------------------------------------------------

    def _run(self) -> None:
        seen = -1
        while not self._stop.is_set() and not self._state.closed:
            seen = self._state.wait_for_change(seen, 0.5)
            pods, _ = self._state.list_objects("pods", None)
            self._kill_orphans({pod["metadata"]["uid"] for pod in pods})
            for pod in pods:
                try:
                    self._reconcile(pod)
                except ApiError:
                    log.debug("emulated kubelet: pod changed underneath", exc_info=True)
                except Exception:  # one bad pod must not stop the node
                    log.exception("emulated kubelet failed on pod %s", pod["metadata"]["name"])

    def _kill_orphans(self, live: set[str]) -> None:
        """Kill the containers of Pods removed from the API (e.g. force-deleted with grace 0)."""
        with self._lock:
            gone = [c for uid, c in self._running.items() if uid not in live and c.killed_for != "deleted"]
        for container in gone:
            container.killed_for = "deleted"
            self._signal(container, signal.SIGKILL)

    def _reconcile(self, pod: Obj) -> None:
        meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        with self._lock:
            container = self._running.get(uid)
        if meta.get("deletionTimestamp"):
            if container is None:
                self._state.remove("pods", ns, name)
            elif container.killed_for != "deleted":
                container.killed_for = "deleted"
                self._terminate(container, float(meta.get("deletionGracePeriodSeconds") or 0))
            return
        if container is not None or status.get("phase") != "Pending" or uid in self._pulling:
            return
        if not spec.get("nodeName"):
            self._schedule(pod)
            return
        first = spec["containers"][0]
        image = str(first.get("image", ""))
        if image == "fault/image-pull":
            self._fail_pull(ns, name, uid, image)
            return
        try:
            env = self._environment(pod, first)
        except ConfigError as error:
            self._waiting(ns, name, first, "CreateContainerConfigError", str(error))
            return
        argv = [expand(str(part), env) for part in list(first.get("command") or []) + list(first.get("args") or [])]
        if not argv:
            message = "the emulated kubelet runs only an explicit command or args (the image is ignored)"
            self._waiting(ns, name, first, "CreateContainerError", message)
            return
        self._launch(pod, first, argv, env)

    # --- scheduling --------------------------------------------------------------------------

    def _schedule(self, pod: Obj) -> None:
        spec = pod["spec"]
        cpus = 0.0
        for container in spec["containers"]:
            resources = container.get("resources") or {}
            request = (resources.get("requests") or {}).get("cpu", (resources.get("limits") or {}).get("cpu"))
            cpus += cpu_quantity(request) if request is not None else 0.0
        selector = spec.get("nodeSelector") or {}
        reason = None
        if spec["containers"][0].get("image") == "fault/unschedulable" or any(
            self.node_labels.get(k) != v for k, v in selector.items()
        ):
            reason = "1 node(s) didn't match Pod's node affinity/selector"
        elif cpus > self.cpus:
            reason = "1 Insufficient cpu"
        stamp = now()

        def bind(obj: Obj) -> None:
            conditions = [c for c in obj["status"].get("conditions") or [] if c.get("type") != "PodScheduled"]
            if reason is None:
                obj["spec"]["nodeName"] = NODE
                conditions.append({"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp})
            else:
                old = [c for c in obj["status"].get("conditions") or [] if c.get("type") == "PodScheduled"]
                if old and old[0].get("status") == "False":
                    return
                message = (
                    f"0/1 nodes are available: {reason}. preemption: 0/1 nodes are available: "
                    "1 No preemption victims found for incoming pod."
                )
                conditions.append(
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": message,
                        "lastTransitionTime": stamp,
                    }
                )
            obj["status"]["conditions"] = conditions

        self._state.mutate("pods", pod["metadata"]["namespace"], pod["metadata"]["name"], bind)

    # --- container set-up --------------------------------------------------------------------

    def _secret(self, namespace: str, name: str) -> dict[str, str]:
        try:
            secret = self._state.get("secrets", namespace, name)
        except ApiError:
            raise ConfigError(f'secret "{name}" not found') from None
        return {
            key: base64.b64decode(value).decode(errors="replace") for key, value in (secret.get("data") or {}).items()
        }

    def _environment(self, pod: Obj, container: Obj) -> dict[str, str]:
        meta, ns = pod["metadata"], pod["metadata"]["namespace"]
        env = dict(self._base_env)
        env.update(
            HOSTNAME=meta["name"],
            KUBERNETES_SERVICE_HOST="127.0.0.1",
            KUBERNETES_SERVICE_PORT=str(self._port),
        )
        for source in container.get("envFrom") or []:
            ref = source.get("secretRef")
            if ref:
                try:
                    values = self._secret(ns, ref["name"])
                except ConfigError:
                    if ref.get("optional"):
                        continue
                    raise
                env.update({f"{source.get('prefix', '')}{k}": v for k, v in values.items()})
        fields = {
            "metadata.name": meta["name"],
            "metadata.namespace": ns,
            "metadata.uid": meta["uid"],
            "spec.nodeName": NODE,
        }
        for item in container.get("env") or []:
            name, source = item["name"], item.get("valueFrom")
            if source is None:
                env[name] = expand(str(item.get("value", "")), env)
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                try:
                    values = self._secret(ns, ref["name"])
                    if ref["key"] not in values:
                        raise ConfigError(f"couldn't find key {ref['key']} in Secret {ns}/{ref['name']}")
                except ConfigError:
                    if ref.get("optional"):
                        continue
                    raise
                env[name] = values[ref["key"]]
            elif "fieldRef" in source:
                env[name] = fields.get(source["fieldRef"].get("fieldPath", ""), "")
        return env

    def _waiting(self, ns: str, name: str, container: Obj, reason: str, message: str) -> None:
        def change(obj: Obj) -> None:
            obj["status"]["containerStatuses"] = [
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": reason, "message": message}},
                }
            ]

        self._state.mutate("pods", ns, name, change)

    def _fail_pull(self, ns: str, name: str, uid: str, image: str) -> None:
        container = self._state.get("pods", ns, name)["spec"]["containers"][0]
        pulled = f"docker.io/{image}:latest"
        self._waiting(
            ns,
            name,
            container,
            "ErrImagePull",
            f'failed to pull and unpack image "{pulled}": pull access denied, '
            "repository does not exist or may require authorization",
        )
        self._pulling.add(uid)

        def back_off() -> None:
            try:
                self._waiting(ns, name, container, "ImagePullBackOff", f'Back-off pulling image "{image}"')
            except ApiError:
                pass  # the Pod went away meanwhile

        timer = threading.Timer(self.pull_backoff_after, back_off)
        timer.daemon = True
        timer.start()

    # --- processes ---------------------------------------------------------------------------

    def _launch(self, pod: Obj, spec: Obj, argv: list[str], env: dict[str, str]) -> None:
        meta = pod["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        cwd = Path(spec.get("workingDir") or self._workdir / "sandboxes" / f"{ns}_{name}")
        logfile = self.log_path(ns, name)
        logfile.parent.mkdir(parents=True, exist_ok=True)
        started = now()
        try:
            cwd.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            message = f'failed to create containerd task: chdir to cwd ("{cwd}") failed: {error.strerror}'
            self._finish(ns, name, spec, started, code=128, reason="StartError", message=message)
            return
        read_end, write_end = os.pipe()
        try:
            with logfile.open("ab") as out:
                process = subprocess.Popen(
                    [sys.executable, "-I", str(SHIM), str(write_end), "--", *argv],
                    env=env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    pass_fds=(write_end,),
                )
        finally:
            os.close(write_end)
        with os.fdopen(read_end) as status:
            started_ok = status.read()
        if started_ok != "ok":
            process.wait()
            problem = started_ok.removeprefix("error ") or "the container shim failed"
            message = (
                "failed to create containerd task: failed to create shim task: OCI runtime create failed: "
                f'runc create failed: unable to start container process: exec: "{argv[0]}": {problem}: unknown'
            )
            self._finish(ns, name, spec, started, code=128, reason="StartError", message=message)
            return
        container = _Container(ns, name, uid, process, started, str(spec.get("image", "")))
        with self._lock:
            self._running[uid] = container
        if container.image == "fault/oom":
            self._later(container, self.oom_after, "oom")
        deadline = pod["spec"].get("activeDeadlineSeconds")
        if deadline is not None:
            self._later(container, float(deadline), "deadline")
        self._state.mutate("pods", ns, name, lambda obj: _running(obj, spec, started, process.pid))
        threading.Thread(target=self._reap, args=(container, spec), name=f"emulated-reaper-{name}", daemon=True).start()

    def _later(self, container: _Container, delay: float, why: str) -> None:
        def kill() -> None:
            if container.killed_for is None:
                container.killed_for = why
                self._signal(container, signal.SIGKILL)

        timer = threading.Timer(delay, kill)
        timer.daemon = True
        container.timers.append(timer)
        timer.start()

    def _signal(self, container: _Container, sig: signal.Signals) -> None:
        """SIGTERM to the container's main process, or (SIGKILL) kill the whole container, through its shim."""
        try:
            os.kill(container.process.pid, signal.SIGTERM if sig == signal.SIGTERM else signal.SIGUSR1)
        except (ProcessLookupError, PermissionError):
            pass

    def _terminate(self, container: _Container, grace: float) -> None:
        self._signal(container, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        if grace > 0:
            timer = threading.Timer(grace, self._signal, args=(container, signal.SIGKILL))
            timer.daemon = True
            container.timers.append(timer)
            timer.start()

    def _reap(self, container: _Container, spec: Obj) -> None:
        code = container.process.wait()  # the shim ends once nothing of the container is left
        for timer in container.timers:
            timer.cancel()
        with self._lock:
            self._running.pop(container.uid, None)
        exit_code = 128 - code if code < 0 else code
        if container.image == "fault/oom" and container.killed_for is None:
            container.killed_for = "oom"
        try:
            if container.killed_for == "deleted" or self._stop.is_set():
                self._state.remove("pods", container.namespace, container.name)
            elif container.killed_for == "oom":
                self._finish(container.namespace, container.name, spec, container.started, code=137, reason="OOMKilled")
            else:
                deadline = container.killed_for == "deadline"
                self._finish(container.namespace, container.name, spec, container.started, code=exit_code,
                             reason="Completed" if exit_code == 0 and not deadline else "Error",
                             pod_reason=_DEADLINE if deadline else None)
        except ApiError:
            pass  # the Pod was removed meanwhile

    def _finish(
        self,
        ns: str,
        name: str,
        spec: Obj,
        started: str,
        *,
        code: int,
        reason: str,
        message: str = "",
        pod_reason: tuple[str, str] | None = None,
    ) -> None:
        phase = "Succeeded" if code == 0 and reason == "Completed" else "Failed"
        stamp = now()
        terminated: Obj = {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": stamp}
        if message:
            terminated["message"] = message

        def change(obj: Obj) -> None:
            status = obj["status"]
            status["phase"] = phase
            if pod_reason:
                status["reason"], status["message"] = pod_reason
            for cond in status.get("conditions") or []:
                if cond["type"] in ("Ready", "ContainersReady"):
                    cond.update(status="False", reason="PodCompleted" if phase == "Succeeded" else "PodFailed")
            status["containerStatuses"] = [
                {
                    "name": spec["name"],
                    "image": spec.get("image", ""),
                    "imageID": f"emulated://{spec.get('image', '')}",
                    "ready": False,
                    "started": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
            ]

        self._state.mutate("pods", ns, name, change)


def _running(obj: Obj, spec: Obj, started: str, pid: int) -> None:
    status = obj["status"]
    status.update(phase="Running", startTime=started, hostIP="127.0.0.1", podIP="127.0.0.1")
    status["conditions"] = [
        {"type": kind, "status": "True", "lastTransitionTime": started}
        for kind in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
    ]
    status["containerStatuses"] = [
        {
            "name": spec["name"],
            "image": spec.get("image", ""),
            "imageID": f"emulated://{spec.get('image', '')}",
            "containerID": f"emulated://{pid}",
            "ready": True,
            "started": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": started}},
        }
    ]
