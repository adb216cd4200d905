"""Loading plugins must not import psij: it installs a SIGCHLD handler and a reaper thread, and
every agent loads every plugin."""

from __future__ import annotations

import subprocess
import sys


def test_loading_the_plugin_does_not_import_psij() -> None:
    code = ("import sys\nfrom pilot.plugin.manager import PluginManager\n"
            "manager = PluginManager()\nassert 'slurm' in manager.adaptors\nprint('psij' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
