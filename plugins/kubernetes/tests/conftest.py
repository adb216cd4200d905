"""Fixtures of pilot-kubernetes's tests.

No Kubernetes can run on the machines these tests run on: ``kube_cluster`` is an EMULATED API
server on loopback with an emulated job controller and kubelet that runs each Pod's command as
a local process (``pilot_kubernetes.testing.EmulatedCluster``; an emulation, not Kubernetes).
Each test gets a fresh one (it starts in milliseconds), so tests never see each other's objects.

Tests marked ``k8s_real`` are for a real cluster: they run only when ``KUBECONFIG`` is set and
are deselected otherwise, also under ``CI=true`` (an opt-in real cluster, not a missing service).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pilot_kubernetes.testing import EmulatedCluster

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``k8s_real`` marker (the root configuration uses --strict-markers)."""
    config.addinivalue_line(
        "markers", "k8s_real: runs against the real cluster of KUBECONFIG instead of the emulated API server"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect ``k8s_real`` tests unless KUBECONFIG names a real cluster (they are not skipped
    services: a run without a real cluster simply does not ask for them)."""
    if os.environ.get("KUBECONFIG"):
        return
    real = [item for item in items if item.get_closest_marker("k8s_real")]
    if real:
        config.hook.pytest_deselected(items=real)
        items[:] = [item for item in items if not item.get_closest_marker("k8s_real")]


@pytest.fixture
def kube_cluster(tmp_path: Path) -> Iterator[EmulatedCluster]:
    """A started EMULATED Kubernetes cluster (not Kubernetes) in a fresh directory; stopped,
    with every Pod's process group killed, after the test."""
    with EmulatedCluster(tmp_path / "emulated-k8s") as cluster:
        yield cluster


@pytest.fixture
def kube_api(kube_cluster: EmulatedCluster) -> Iterator[ApiClient]:
    """An official ``kubernetes`` client for ``kube_cluster`` (context ``emulated``)."""
    from kubernetes import config

    client = config.new_client_from_config(  # type: ignore[no-untyped-call]
        str(kube_cluster.kubeconfig), context="emulated"
    )
    yield client
    client.close()
