"""Built-in launch methods: ``fork`` (a unit on this host) and ``mpirun`` (an MPI unit).

Registered as the built-in plugin ``launch``; the command line and host file helpers they use
are in ``pilot.commandline``.
"""

from __future__ import annotations

from pilot.commandline import command_argv, write_hostfile
from pilot.plugin import hookimpl
from pilot.plugin.types import LaunchMethodRecord, LaunchRequest


class ForkLaunch:
    """Runs the unit as a child of the agent."""

    #: its argv depends on the command line alone (the agent may reuse it for the same line)
    line_only = True

    def argv(self, request: LaunchRequest) -> list[str]:
        """The unit's own argv."""
        return command_argv(request.command_line)


class MpirunLaunch:
    """``mpirun -np N -hostfile <sandbox>/.pilot-hostfile-<unique>`` with one line per slot.

    The host file gets a name of its own per unit: units sharing a working directory never
    race on it, and a user's file called ``hostfile`` is never overwritten."""

    def argv(self, request: LaunchRequest) -> list[str]:
        """Write the host file, then wrap the unit's command line in mpirun."""
        hostfile = write_hostfile(request)
        return ["mpirun", "-np", str(request.processes), "-hostfile", str(hostfile),
                *command_argv(request.command_line)]


@hookimpl
def pilot_launch_methods() -> list[LaunchMethodRecord]:
    """Register ``fork`` and ``mpirun``."""
    return [LaunchMethodRecord(name="fork", method=ForkLaunch()),
            LaunchMethodRecord(name="mpirun", method=MpirunLaunch())]
