"""Fixtures shared by the k8s:// pilot tests: an EMULATED Kubernetes cluster (not Kubernetes: an
API server emulation on loopback whose test kubelet runs each Pod's command as a local process,
the image ignored) and the test Redis, which the Pods reach on loopback as any local process.

Test classes get the fixtures by subclassing ``K8sPilotFixtures``.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pilot.lifecycle import LIVE_PILOT_STATES, cancel_pilot
from pilot.testing.services import redis_options
from pilot_kubernetes.testing import EmulatedCluster

__all__ = ["SERVICE_URL", "K8sPilotFixtures"]

SERVICE_URL = "k8s://emulated/default"


class K8sPilotFixtures:
    """Fixtures of the k8s:// pilot tests (EMULATED cluster, test Redis), for test classes."""

    @pytest.fixture
    def redis_url(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
        """The test Redis under a fresh key prefix, as a URL with the password; this process keeps
        the password in a credentials file of the test's own. Only the prefix's keys are deleted."""
        import redis

        options = redis_options()
        monkeypatch.setenv("PILOT_REDIS_CREDENTIALS", str(tmp_path / "redis-passwords"))
        monkeypatch.delenv("PILOT_REDIS_PASSWORD", raising=False)
        prefix = f"k8s{uuid.uuid4().hex[:12]}"
        yield f"redis://:{options['password']}@{options['host']}:{options['port']}/0?prefix={prefix}"
        client = redis.Redis(host=options["host"], port=int(options["port"]), password=options["password"])
        keys = list(client.scan_iter(match=f"pilot:{prefix}:*", count=10_000))
        for start in range(0, len(keys), 5000):
            client.delete(*keys[start:start + 5000])
        client.close()

    @pytest.fixture
    def k8s_cluster(self, tmp_path: Path) -> Iterator[EmulatedCluster]:
        """An EMULATED Kubernetes cluster (as ``kube_cluster``) whose Pods get only ``PATH``, ``LANG``
        and a ``HOME`` of their own as base environment: no credentials file, no ``PILOT_*``
        setting of this process, so the agent finds the store's password only through its Secret."""
        pod_home = tmp_path / "pod-home"
        pod_home.mkdir()
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(pod_home)}
        with EmulatedCluster(tmp_path / "emulated-k8s", base_env=base) as cluster:
            yield cluster

    @pytest.fixture
    def k8s_env(self, pilot_env: Any, k8s_cluster: EmulatedCluster, redis_url: str,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
        """``pilot_env`` whose default store is the test Redis and whose kubeconfig is the emulated
        cluster's; the pilots left alive are canceled before the cluster stops."""
        monkeypatch.setenv("KUBECONFIG", str(k8s_cluster.kubeconfig))
        monkeypatch.setenv("PILOT_COORDINATION_URL", redis_url)
        yield pilot_env
        store = pilot_env.session.store(redis_url)
        urls = {SERVICE_URL}
        for pilot in store.find_pilots(LIVE_PILOT_STATES):
            urls.add(pilot["description"]["service_url"])
            try:
                cancel_pilot(pilot_env.session, store, pilot)
            except Exception as exc:  # best effort: the test has its verdict
                print(f"could not cancel pilot {pilot['id']}: {exc}", file=sys.stderr)
        for url in urls:  # stop the executors' watches before the cluster goes
            close = getattr(pilot_env.session.adaptor(url), "close", None)
            if close is not None:
                close()

    @pytest.fixture
    def k8s_description(self, k8s_env: Any) -> dict[str, Any]:
        """A 2-slot pilot on the emulated cluster. The emulated kubelet ignores the image, so the
        agent runs with this test's Python (``extra.python``) instead of the image's."""
        return {"service_url": SERVICE_URL, "number_of_processes": 2, "working_directory": str(k8s_env.work),
                "extra": {"python": sys.executable}}

    @pytest.fixture
    def api_client(self, k8s_cluster: EmulatedCluster) -> Iterator[Any]:
        """The official ``kubernetes`` client on the emulated cluster (context ``emulated``)."""
        from kubernetes import config

        client = config.new_client_from_config(str(k8s_cluster.kubeconfig), context="emulated")  # type: ignore[no-untyped-call]
        yield client
        client.close()
