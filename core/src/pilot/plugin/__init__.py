"""The plugin system: one name, ``pilot``, is the pluggy project name, the entry-point group and
the hook prefix (``pilot_``)."""

from __future__ import annotations

import pluggy

NAME = "pilot"
hookspec = pluggy.HookspecMarker(NAME)
hookimpl = pluggy.HookimplMarker(NAME)

__all__ = ["NAME", "hookimpl", "hookspec"]
