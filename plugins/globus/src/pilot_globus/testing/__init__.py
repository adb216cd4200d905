"""Test kit of pilot-globus: ``FakeGlobus``, a stateful FAKE of Globus for tests (not the Globus service).

It fakes Globus Auth, the Transfer API and collection HTTPS servers on one loopback server, so the
Globus backend can be tested through the real globus-sdk code paths. Importing this package starts
nothing.
"""

from __future__ import annotations

from pilot_globus.testing._fake import FakeGlobus

__all__ = ["FakeGlobus"]
