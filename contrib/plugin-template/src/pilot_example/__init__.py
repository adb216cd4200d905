"""pilot-example: a template plugin for ``pilot``.

It registers two things through the core's hooks:

- a resource adaptor for ``example://`` URLs that hands every call to the built-in fork adaptor
  (replace ``ExampleAdaptor`` with calls to your batch system or cloud);
- a ``pilot_state_changed`` observer that counts the state changes made in this process.

The entry point (group ``pilot``, name ``example``) points at ``plugin``, an instance of
``ExamplePlugin``; pluggy finds the hook implementations on it by their ``pilot_`` names.
"""

from __future__ import annotations

import collections

from pilot.builtin.fork import ForkAdaptor
from pilot.plugin import hookimpl
from pilot.plugin.types import NativeStatus, PilotJobRequest, ResourceAdaptorRecord
from pilot.states import Kind, State

__all__ = ["ExampleAdaptor", "ExamplePlugin", "plugin"]


class ExampleAdaptor:
    """A resource adaptor (``pilot.plugin.types.ResourceAdaptor``) for ``example://host``.

    It delegates to the fork adaptor, so ``example://localhost`` runs the agent on this host.
    """

    def __init__(self, service_url: str) -> None:
        # The fork adaptor checks that the URL names this host; it ignores the scheme.
        self._fork = ForkAdaptor(service_url)

    def submit(self, request: PilotJobRequest) -> str:
        """Start a job that runs ``request.agent_argv``; return its native id."""
        return self._fork.submit(request)

    def status(self, native_id: str) -> NativeStatus:
        """The job's state as the resource sees it."""
        return self._fork.status(native_id)

    def cancel(self, native_id: str) -> None:
        """End the job and everything it started."""
        self._fork.cancel(native_id)


class ExamplePlugin:
    """The plugin object: its ``pilot_*`` methods are the hook implementations."""

    def __init__(self) -> None:
        #: ``(kind, old, new) -> count`` of the changes this process made and observed.
        self.transitions: collections.Counter[tuple[str, str, str]] = collections.Counter()

    @hookimpl
    def pilot_resource_adaptors(self) -> list[ResourceAdaptorRecord]:
        """Register ``ExampleAdaptor`` for the ``example`` scheme."""
        return [ResourceAdaptorRecord(name="example", schemes=("example",), factory=ExampleAdaptor)]

    @hookimpl
    def pilot_state_changed(self, kind: Kind, entity_id: str, old: State, new: State) -> None:
        """Count the change; observers must be quick and must not raise."""
        self.transitions[(str(kind), str(old), str(new))] += 1


#: The instance the entry point loads.
plugin = ExamplePlugin()
