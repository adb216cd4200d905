"""pilot-psij: pilots on SLURM, PBS, LSF, Flux and Cobalt through PSI/J's executors.

Registered through the entry point group ``pilot``; ``slurm://localhost`` (and ``pbs://``,
``lsf://``, ``flux://``, ``cobalt://``) then picks the matching PSI/J executor. Importing this
module does no work: executors are created when a pilot is first submitted or watched.
"""

from __future__ import annotations

from pilot.plugin import hookimpl
from pilot.plugin.types import ResourceAdaptorRecord

#: URL scheme -> PSI/J executor name.
SCHEMES = {"slurm": "slurm", "pbs": "pbs", "lsf": "lsf", "flux": "flux", "cobalt": "cobalt"}


@hookimpl
def pilot_resource_adaptors() -> list[ResourceAdaptorRecord]:
    """One adaptor per PSI/J batch executor."""
    from pilot_psij.adaptor import factory

    return [ResourceAdaptorRecord(name=f"psij-{executor}", schemes=(scheme,), factory=factory(executor))
            for scheme, executor in SCHEMES.items()]
