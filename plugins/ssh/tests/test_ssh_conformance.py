"""ssh:// pilots run the adaptor conformance suite against the real sshd on loopback
(``ssh://ciuser@127.0.0.1:2222``, tests/infra/start-sshd.sh)."""

from __future__ import annotations

from typing import Any

import pytest
from ssh_fixtures import SSHEnv

from pilot.procs import session_members
from pilot.testing.adaptor_conformance import AdaptorConformance

pytestmark = pytest.mark.sshd


class TestSSHConformance(AdaptorConformance):
    startup_timeout = 60.0
    heartbeat_timeout = 6.0
    end_timeout = 30.0
    walltime_minutes = 0.1

    @pytest.fixture
    def pilot_description(self, ssh_env: SSHEnv) -> dict[str, Any]:
        """Sandboxes in the directory the remote user shares with the test."""
        return ssh_env.pilot(number_of_processes=2)

    @pytest.fixture
    def rejected_description(self, pilot_description: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """A host without a batch system refuses what its user may not do: here, the sandbox
        (mkdir's own message)."""
        return {**pilot_description, "working_directory": "/root/not-for-ciuser"}, "Permission denied"

    def native_job_exists(self, native_id: str) -> bool:
        """The "job" is the agent's session on the host (``<pid>@<host>/<pilot id>``); the host
        is this machine (the sshd listens on loopback), so its /proc shows it."""
        return bool(session_members(int(native_id.partition("@")[0])))
