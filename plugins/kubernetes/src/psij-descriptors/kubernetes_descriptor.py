"""PSI/J registration of the `kubernetes` executor (distribution pilot-kubernetes).

PSI/J imports every module of the `psij-descriptors` namespace package on its sys.path
entries and reads `__PSI_J_EXECUTORS__`. It then loads the module named by `cls` *by file
path* under the same sys.path entry, outside `sys.modules`; pointing `cls` at
`pilot_kubernetes.psij_executor` would give a second copy of the executor class (and of its
config class, so `isinstance` checks against the one users import would fail). `cls` names
this module instead, which re-exports the one class imported the usual way, lazily.
"""

from packaging.version import Version
from psij.descriptor import Descriptor

__PSI_J_EXECUTORS__ = [
    Descriptor(
        name="kubernetes",
        nice_name="Kubernetes",
        version=Version("0.1.0"),
        cls="psij-descriptors.kubernetes_descriptor.KubernetesJobExecutor",
    ),
]


def __getattr__(name: str) -> object:
    """`KubernetesJobExecutor`, imported on first use."""
    if name == "KubernetesJobExecutor":
        from pilot_kubernetes.psij_executor import KubernetesJobExecutor

        return KubernetesJobExecutor
    raise AttributeError(name)
