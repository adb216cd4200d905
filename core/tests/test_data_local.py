"""The local data backend passes the data-backend conformance suite (``file://`` and bare paths)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilot.testing.data_conformance import DataBackendConformance


class TestLocalBackendFileUrls(DataBackendConformance):
    @pytest.fixture
    def place_url(self, tmp_path: Path) -> str:
        return f"file://{tmp_path}/place"


class TestLocalBackendBarePaths(DataBackendConformance):
    @pytest.fixture
    def place_url(self, tmp_path: Path) -> str:
        return str(tmp_path / "bare place")
