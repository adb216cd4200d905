"""The conformance suite every data backend must pass.

A backend's test module subclasses ``DataBackendConformance`` and overrides the ``place_url``
fixture (the URL of a fresh storage place that does not exist yet), and optionally ``options``
(the backend keys a PilotData would carry in ``extra``)::

    class TestMyBackend(DataBackendConformance):
        @pytest.fixture
        def place_url(self, tmp_path):
            return f"mybackend://{tmp_path}/place"

The backend is looked up through the plugin manager by the scheme of ``place_url``, as the
core does, so the suite also checks that ``pilot_data_backends`` registers it.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pilot.data.transfer import join
from pilot.errors import PilotError
from pilot.plugin.manager import PluginManager
from pilot.plugin.types import DataBackend
from pilot.urls import scheme_of


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


class DataBackendConformance:
    """Behaviour every ``DataBackend`` must show. Subclass it and override ``place_url``."""

    @pytest.fixture
    def place_url(self) -> str:
        """URL of a fresh storage place (not created yet); every backend's test must override it."""
        pytest.fail("override the place_url fixture in your DataBackendConformance subclass")

    @pytest.fixture
    def options(self) -> Mapping[str, Any]:
        """Backend keys (a PilotData's ``extra``) passed to every call."""
        return {}

    @pytest.fixture
    def backend(self, place_url: str) -> Iterator[Any]:
        """The backend registered for ``place_url``'s scheme, built like the core builds it."""
        record = PluginManager().data_backend_for(scheme_of(place_url))
        backend = record.factory()
        yield backend
        backend.close()

    @pytest.fixture
    def place(self, backend: DataBackend, place_url: str, options: Mapping[str, Any]) -> Iterator[str]:
        """The place, created; removed afterwards."""
        backend.create_place(place_url, options)
        yield place_url
        backend.remove(place_url, options)

    def test_the_scheme_is_registered_through_the_hook(self, place_url: str) -> None:
        assert scheme_of(place_url) in PluginManager().data_backends  # via pilot_data_backends

    def test_create_place_is_idempotent_and_starts_empty(self, backend: DataBackend, place: str,
                                                         options: Mapping[str, Any]) -> None:
        backend.create_place(place, options)
        assert backend.list(place, options) == []

    def test_put_then_get_gives_the_same_bytes(self, backend: DataBackend, place: str, options: Mapping[str, Any],
                                               tmp_path: Path) -> None:
        data = os.urandom(100_000)
        src = _write(tmp_path / "in.bin", data)
        stored = backend.put(str(src), join(place, "in.bin"), options)
        assert (stored.name, stored.size) == ("in.bin", len(data))
        fetched = backend.get(join(place, "in.bin"), str(tmp_path / "out.bin"), options)
        assert fetched.size == len(data)
        assert (tmp_path / "out.bin").read_bytes() == data

    def test_checksums_when_given_are_sha256_of_the_content(self, backend: DataBackend, place: str,
                                                            options: Mapping[str, Any], tmp_path: Path) -> None:
        data = b"checksum me\n" * 1000
        stored = backend.put(str(_write(tmp_path / "c.txt", data)), join(place, "c.txt"), options)
        for info in (stored, backend.stat(join(place, "c.txt"), options)):
            assert info.size == len(data)
            assert info.checksum in (None, f"sha256:{hashlib.sha256(data).hexdigest()}")

    def test_list_shows_complete_files_by_name(self, backend: DataBackend, place: str, options: Mapping[str, Any],
                                               tmp_path: Path) -> None:
        for name, size in (("b.txt", 3), ("a.txt", 0), ("with space.txt", 5)):
            backend.put(str(_write(tmp_path / name, b"x" * size)), join(place, name), options)
        listed = backend.list(place, options)
        assert [(f.name, f.size) for f in listed] == [("a.txt", 0), ("b.txt", 3), ("with space.txt", 5)]

    def test_a_missing_place_lists_empty(self, backend: DataBackend, place: str, options: Mapping[str, Any]) -> None:
        assert backend.list(join(place, "never-created"), options) == []

    def test_put_replaces_a_file(self, backend: DataBackend, place: str, options: Mapping[str, Any],
                                 tmp_path: Path) -> None:
        backend.put(str(_write(tmp_path / "f", b"old contents")), join(place, "f"), options)
        backend.put(str(_write(tmp_path / "f", b"new")), join(place, "f"), options)
        backend.get(join(place, "f"), str(tmp_path / "back"), options)
        assert (tmp_path / "back").read_bytes() == b"new"
        assert [f.name for f in backend.list(place, options)] == ["f"]

    def test_a_failed_put_leaves_no_file_under_the_final_name(self, backend: DataBackend, place: str,
                                                               options: Mapping[str, Any], tmp_path: Path) -> None:
        with pytest.raises(PilotError):
            backend.put(str(tmp_path / "does-not-exist"), join(place, "target"), options)
        assert backend.list(place, options) == []

    def test_getting_a_missing_file_raises_and_leaves_nothing(self, backend: DataBackend, place: str,
                                                              options: Mapping[str, Any], tmp_path: Path) -> None:
        with pytest.raises(PilotError):
            backend.get(join(place, "nothing-here"), str(tmp_path / "out"), options)
        assert not (tmp_path / "out").exists()
        with pytest.raises(PilotError):
            backend.stat(join(place, "nothing-here"), options)

    def test_remove_a_file_a_place_and_nothing(self, backend: DataBackend, place: str, options: Mapping[str, Any],
                                               tmp_path: Path) -> None:
        src = str(_write(tmp_path / "r", b"r"))
        backend.put(src, join(place, "r"), options)
        backend.put(src, join(place, "sub", "s"), options)
        backend.remove(join(place, "r"), options)
        assert [f.name for f in backend.list(place, options)] == []
        backend.remove(join(place, "sub"), options)
        backend.remove(join(place, "r"), options)  # already gone: fine
        backend.put(src, join(place, "again"), options)
        backend.remove(place, options)
        assert backend.list(place, options) == []
        backend.create_place(place, options)

    def test_copy_between_places(self, backend: DataBackend, place: str, options: Mapping[str, Any],
                                 tmp_path: Path) -> None:
        data = os.urandom(50_000)
        backend.put(str(_write(tmp_path / "orig", data)), join(place, "one", "orig"), options)
        copied = backend.copy(join(place, "one", "orig"), join(place, "two", "copy"), options)
        assert copied.size == len(data)
        backend.get(join(place, "two", "copy"), str(tmp_path / "back"), options)
        assert (tmp_path / "back").read_bytes() == data
        assert [f.name for f in backend.list(join(place, "one"), options)] == ["orig"]

    def test_concurrent_puts_from_threads(self, backend: DataBackend, place: str, options: Mapping[str, Any],
                                          tmp_path: Path) -> None:
        files = {f"t{n}": os.urandom(10_000 + n) for n in range(12)}
        for name, data in files.items():
            _write(tmp_path / name, data)
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda n: backend.put(str(tmp_path / n), join(place, n), options), files))
        assert {f.name: f.size for f in backend.list(place, options)} == {n: len(d) for n, d in files.items()}

    def test_a_larger_file(self, backend: DataBackend, place: str, options: Mapping[str, Any], tmp_path: Path) -> None:
        data = os.urandom(3_000_000)
        backend.put(str(_write(tmp_path / "big", data)), join(place, "big"), options)
        backend.get(join(place, "big"), str(tmp_path / "big.back"), options)
        assert hashlib.sha256((tmp_path / "big.back").read_bytes()).digest() == hashlib.sha256(data).digest()

    def test_local_path_is_a_readable_file_or_none(self, backend: DataBackend, place: str, options: Mapping[str, Any],
                                                   tmp_path: Path) -> None:
        backend.put(str(_write(tmp_path / "l", b"local")), join(place, "l"), options)
        path = backend.local_path(join(place, "l"))
        assert path is None or Path(path).read_bytes() == b"local"
