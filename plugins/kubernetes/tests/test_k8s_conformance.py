"""The adaptor conformance suite on k8s:// against the EMULATED Kubernetes API server
(``pilot_kubernetes.testing``: an HTTP emulation on loopback, not Kubernetes; its test kubelet
runs each Pod's command as a local process under a shim that ends every process of the
container with it, as a PID namespace does; so the agent's pid is one of this host's and the
suite's own kill_agent and freeze_agent work), with the test Redis as the store."""

from __future__ import annotations

from typing import Any

import pytest
from k8s_pilot_fixtures import K8sPilotFixtures

from pilot.testing.adaptor_conformance import AdaptorConformance


class TestK8sConformance(K8sPilotFixtures, AdaptorConformance):
    """Every behaviour the suite asks of an adaptor, on the emulated API server."""

    @pytest.fixture(autouse=True)
    def _on_emulated_cluster(self, k8s_env: Any, api_client: Any) -> None:
        """The store is the test Redis and the kubeconfig the emulated cluster's, for every test."""
        self._api = api_client

    @pytest.fixture
    def pilot_description(self, k8s_description: dict[str, Any]) -> dict[str, Any]:
        """Two slots on the emulated cluster (the agent runs with this test's Python: the
        emulated kubelet ignores the image)."""
        return k8s_description

    @pytest.fixture
    def rejected_description(self, k8s_description: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """A namespace the API server does not know: it refuses with its own message."""
        return ({**k8s_description, "service_url": "k8s://emulated/no-such-namespace"},
                'namespaces "no-such-namespace" not found')

    def native_job_exists(self, native_id: str) -> bool:
        """True while the emulated API server has the Job and it has not finished (a Job being
        deleted still counts until it is gone)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        namespace, _, name = native_id.rpartition("/")
        try:
            job = client.BatchV1Api(self._api).read_namespaced_job(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        conditions = (job.status.conditions if job.status is not None else None) or []
        return not any(c.type in ("Complete", "Failed") and c.status == "True" for c in conditions)
