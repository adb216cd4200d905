"""Emulated Kubernetes API server, job controller and kubelet for tests (an emulation, not Kubernetes).

``EmulatedCluster(workdir)`` serves the part of the Kubernetes API that pilot's ``k8s://``
adaptor and PSI/J ``kubernetes`` executor use, on loopback, and runs each Pod's command as a
local process; see :mod:`pilot_kubernetes.testing.cluster`.
"""

from .cluster import EmulatedCluster

__all__ = ["EmulatedCluster"]
