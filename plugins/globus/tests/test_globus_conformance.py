"""The data-backend conformance suite on ``globus://``, against the FAKE Globus services of
``pilot_globus.testing`` (Auth, Transfer API and collection HTTPS servers copying between local
directories): Globus cannot be reached from the test machines."""

from __future__ import annotations

import uuid

import pytest

from pilot.testing.data_conformance import DataBackendConformance

from globus_helpers import Site


class TestGlobusConformance(DataBackendConformance):
    """Every operation through the real globus-sdk code paths: HTTPS for this host's files,
    Transfer tasks for copies, mkdir/ls/stat/delete through the Transfer API."""

    @pytest.fixture
    def place_url(self, site: Site) -> str:
        return f"globus://{site.a}/places/{uuid.uuid4().hex}"


class TestNamedCollectionConformance(DataBackendConformance):
    """The same, naming the collection by its site-configuration name (``globus://b/...``)."""

    @pytest.fixture
    def place_url(self, site: Site) -> str:
        return f"globus://b/places/{uuid.uuid4().hex}"
