"""pilot-kubernetes: pilots on Kubernetes (``k8s://[context]/[namespace]``), each a ``batch/v1``
Job whose Pod runs the agent, through this distribution's PSI/J executor ``kubernetes``.

Registered through the entry point group ``pilot``. Importing this module does no work and
imports neither PSI/J nor the Kubernetes client (agents load every plugin): the adaptor, and
with it the executor and its watch, is built when the first ``k8s://`` pilot is created or
looked at.
"""

from __future__ import annotations

from pilot.plugin import hookimpl
from pilot.plugin.types import ResourceAdaptor, ResourceAdaptorRecord

SCHEME = "k8s"


def _adaptor(service_url: str) -> ResourceAdaptor:
    """Build the adaptor for one ``k8s://`` URL (imports the heavy modules on first use)."""
    from pilot_kubernetes.adaptor import KubernetesAdaptor

    return KubernetesAdaptor(service_url)


@hookimpl
def pilot_resource_adaptors() -> list[ResourceAdaptorRecord]:
    """The ``k8s://`` adaptor."""
    return [ResourceAdaptorRecord(name="kubernetes", schemes=(SCHEME,), factory=_adaptor)]
