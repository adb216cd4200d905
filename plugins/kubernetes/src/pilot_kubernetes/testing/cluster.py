"""An EMULATED Kubernetes cluster for tests: API server + job controller + kubelet (not Kubernetes).

No Kubernetes can run on the machines these tests run on, so :class:`EmulatedCluster` serves
the subset of the Kubernetes API the ``k8s://`` adaptor and the PSI/J ``kubernetes`` executor
use, over real HTTP on loopback, and runs each Pod's command as a local process.

Why a server of our own rather than ``kmock`` (0.8, aiohttp): kmock serves every object with
``resourceVersion: "..."``, streams watches from "now" with no resume, no ``timeoutSeconds``,
no ``410 Gone``, no label/field selectors on watches and no deletion propagation; those are
exactly what the executor's one-watch-per-namespace design must be tested against. A
``ThreadingHTTPServer`` with an in-memory store (about 2,000 lines here) does all of that,
starts in milliseconds and needs no extra dependency or event loop.
"""

from __future__ import annotations

import json
import secrets
import shutil
import ssl
import subprocess
import threading
from pathlib import Path
from types import TracebackType

from .jobs import JobController
from .kubelet import Kubelet
from .server import EmulatedApiServer
from .state import ClusterState


class EmulatedCluster:
    """A one-node emulated Kubernetes cluster on loopback, for tests (not Kubernetes).

    ``kubeconfig`` names the contexts ``emulated`` (namespace ``default``, the current one)
    and ``other`` (namespace ``other``); ``request_count()`` counts API requests served;
    ``expire_watches()`` ends every open watch and makes resuming from an older
    resourceVersion get 410 Gone. Use as a context manager or call start()/stop().
    """

    def __init__(self, workdir: str | Path, cpus: float = 8, base_env: dict[str, str] | None = None,
                 tls: bool = False) -> None:
        self.workdir = Path(workdir)
        self._tls = tls
        self.state = ClusterState()
        self._token = secrets.token_urlsafe(24)
        self._cpus = cpus
        self._base_env = base_env
        self._server: EmulatedApiServer | None = None
        self._serving: threading.Thread | None = None
        self._kubelet: Kubelet | None = None
        self._jobs: JobController | None = None

    @property
    def kubelet(self) -> Kubelet:
        """The emulated node's kubelet (fault timings, node labels, running pids)."""
        if self._kubelet is None:
            raise RuntimeError("the emulated cluster is not started")
        return self._kubelet

    @property
    def server_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the emulated API server."""
        if self._server is None:
            raise RuntimeError("the emulated cluster is not started")
        return self._server.url

    @property
    def kubeconfig(self) -> Path:
        """The kubeconfig file for the emulated cluster (written at start)."""
        return self.workdir / "kubeconfig"

    def start(self) -> EmulatedCluster:
        """Serve the API on a free loopback port and start the job controller and kubelet."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._server = EmulatedApiServer(self.state, self._token, self._log_path)
        if self._tls:
            self._serve_tls(self._server)
        self._kubelet = Kubelet(self.state, self.workdir, self._server.server_address[1], self._cpus, self._base_env)
        self._jobs = JobController(self.state)
        self._serving = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="emulated-apiserver", daemon=True
        )
        self._serving.start()
        self._jobs.start()
        self._kubelet.start()
        self._write_kubeconfig()
        return self

    def _serve_tls(self, server: EmulatedApiServer) -> None:
        """HTTPS with a throw-away self-signed certificate for 127.0.0.1 (``ca_cert``)."""
        key = self.workdir / "apiserver.key"
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RuntimeError("EmulatedCluster(tls=True) needs the openssl command")
        subprocess.run([openssl, "req", "-x509", "-nodes", "-newkey", "rsa:2048", "-days", "1",
                        "-subj", "/CN=emulated-apiserver", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(self.ca_cert)], check=True, capture_output=True)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        server.scheme = "https"

    @property
    def ca_cert(self) -> Path:
        """The certificate of the HTTPS server (``tls=True``), which is also its CA."""
        return self.workdir / "apiserver.crt"

    def service_account(self, directory: Path, namespace: str = "default") -> dict[str, str]:
        """Write what Kubernetes mounts into a Pod for its service account (``token``,
        ``ca.crt``, ``namespace``) into ``directory``; return the environment a Pod gets
        (``KUBERNETES_SERVICE_HOST``/``PORT``). Needs ``tls=True``: in-cluster clients use HTTPS."""
        if not self._tls or self._server is None:
            raise RuntimeError("service_account() needs a started EmulatedCluster(tls=True)")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "token").write_text(self._token)
        (directory / "ca.crt").write_bytes(self.ca_cert.read_bytes())
        (directory / "namespace").write_text(namespace)
        return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self._server.server_address[1])}

    def stop(self) -> None:
        """Stop serving, end every watch and kill every Pod's process group."""
        self.state.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._jobs is not None:
            self._jobs.stop()
        if self._kubelet is not None:
            self._kubelet.stop()

    def _log_path(self, namespace: str, name: str) -> Path:
        return self.kubelet.log_path(namespace, name)

    def request_count(self) -> int:
        """API requests served so far (every method, watches included)."""
        return self._server.requests if self._server is not None else 0

    def expire_watches(self) -> None:
        """End every open watch; resuming from any resourceVersion seen so far gets 410 Gone."""
        self.state.expire_watches()

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "emulated",
            "clusters": [{"name": "emulated", "cluster": {"server": self.server_url,
                                                          **({"certificate-authority": str(self.ca_cert)}
                                                             if self._tls else {})}}],
            "users": [{"name": "emulated", "user": {"token": self._token}}],
            "contexts": [
                {"name": "emulated", "context": {"cluster": "emulated", "user": "emulated", "namespace": "default"}},
                {"name": "other", "context": {"cluster": "emulated", "user": "emulated", "namespace": "other"}},
            ],
        }
        # JSON is YAML; the file holds the emulated cluster's bearer token, so owner-only
        self.kubeconfig.touch(mode=0o600)
        self.kubeconfig.write_text(json.dumps(config, indent=2))

    def __enter__(self) -> EmulatedCluster:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
