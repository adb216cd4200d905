"""Emulated Kubernetes API server and test kubelet (an emulation for tests, not Kubernetes)."""
