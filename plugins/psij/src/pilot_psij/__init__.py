"""pilot-psij: pilots on SLURM, PBS, LSF, Flux and Cobalt through PSI/J's executors.

Registered through the entry point group ``pilot``; ``slurm://localhost`` (and ``pbs://``,
``lsf://``, ``flux://``, ``cobalt://``) then picks the matching PSI/J executor. Importing this
module does no work: executors are created when a pilot is first submitted or watched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pilot.plugin import hookimpl
from pilot.plugin.types import ResourceAdaptorRecord

#: URL scheme -> PSI/J executor name.
SCHEMES = {"slurm": "slurm", "pbs": "pbs", "lsf": "lsf", "flux": "flux", "cobalt": "cobalt"}


def _lazy_factory(executor: str) -> Callable[[str], Any]:
    """Build the adaptor on first use: importing psij installs a SIGCHLD handler and threads,
    which agents (which load every plugin) must not pay for."""
    def make(service_url: str) -> Any:
        from pilot_psij.adaptor import factory

        return factory(executor)(service_url)

    return make


@hookimpl
def pilot_resource_adaptors() -> list[ResourceAdaptorRecord]:
    """One adaptor per PSI/J batch executor."""
    return [ResourceAdaptorRecord(name=f"psij-{executor}", schemes=(scheme,), factory=_lazy_factory(executor))
            for scheme, executor in SCHEMES.items()]
