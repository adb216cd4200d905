"""pilot-sftp against the real sshd on loopback: the data-backend conformance suite, host-key
checking, key authentication, connection reuse, and no secrets in URLs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pilot.errors import PilotError
from pilot.testing.data_conformance import DataBackendConformance
from pilot_sftp.backend import SFTPBackend


def _url(sshd: Mapping[str, str], path: str, scheme: str = "sftp") -> str:
    return f"{scheme}://{sshd['user']}@127.0.0.1:{sshd['port']}{path}"


def _opts(sshd: Mapping[str, str]) -> dict[str, str]:
    return {"known_hosts": sshd["known_hosts"], "identity_file": sshd["identity_file"]}


def _remote_dir(sshd: Mapping[str, str]) -> str:
    base = "/root" if sshd["user"] == "root" else f"/home/{sshd['user']}"
    return f"{base}/pilot-tests/{uuid.uuid4().hex}"


class TestSFTPConformance(DataBackendConformance):
    @pytest.fixture
    def place_url(self, sshd: Mapping[str, str]) -> str:
        return _url(sshd, _remote_dir(sshd))

    @pytest.fixture
    def options(self, sshd: Mapping[str, str]) -> Mapping[str, Any]:
        return _opts(sshd)


class TestSSHSchemeConformance(TestSFTPConformance):
    @pytest.fixture
    def place_url(self, sshd: Mapping[str, str]) -> str:
        return _url(sshd, _remote_dir(sshd), scheme="ssh")


def test_an_unknown_host_key_is_refused_with_a_clear_error(sshd: Mapping[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    backend = SFTPBackend()
    try:
        with pytest.raises(PilotError, match=r"host key of 127\.0\.0\.1 port .* not trusted"):
            backend.create_place(_url(sshd, _remote_dir(sshd)), {**_opts(sshd), "known_hosts": str(empty)})
        assert backend.connections_made == 0
    finally:
        backend.close()


def test_a_wrong_host_key_is_refused(sshd: Mapping[str, str], tmp_path: Path) -> None:
    wrong = tmp_path / "known_hosts"
    other = "AAAAC3NzaC1lZDI1NTE5AAAAIG2E8m4v6E5q9rQ6Hk6m7yqCw0d0sZ3Xr3H2N0m9bA0c"
    wrong.write_text(f"[127.0.0.1]:{sshd['port']} ssh-ed25519 {other}\n")
    backend = SFTPBackend()
    try:
        with pytest.raises(PilotError, match="not trusted"):
            backend.list(_url(sshd, "/tmp"), {**_opts(sshd), "known_hosts": str(wrong)})
    finally:
        backend.close()


def test_a_key_the_server_does_not_accept_fails_authentication(sshd: Mapping[str, str], tmp_path: Path) -> None:
    import asyncssh

    key = tmp_path / "other_key"
    key.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    os.chmod(key, 0o600)
    backend = SFTPBackend()
    try:
        with pytest.raises(PilotError, match="authentication failed"):
            backend.list(_url(sshd, "/tmp"), {**_opts(sshd), "identity_file": str(key)})
    finally:
        backend.close()


def test_a_password_in_the_url_is_refused(sshd: Mapping[str, str]) -> None:
    backend = SFTPBackend()
    with pytest.raises(PilotError, match="passwords are not accepted"):
        backend.list(f"sftp://{sshd['user']}:secret@127.0.0.1:{sshd['port']}/tmp", _opts(sshd))


def test_one_connection_serves_many_files(sshd: Mapping[str, str], tmp_path: Path) -> None:
    backend = SFTPBackend()
    place = _url(sshd, _remote_dir(sshd))
    options = _opts(sshd)
    try:
        src = tmp_path / "small"
        src.write_bytes(b"x" * 4096)
        for n in range(50):
            backend.put(str(src), f"{place}/f{n}", options)
        for n in range(50):
            backend.get(f"{place}/f{n}", str(tmp_path / f"back{n}"), options)
        assert len(backend.list(place, options)) == 50
        assert backend.connections_made == 1
        backend.remove(place, options)
    finally:
        backend.close()


def test_a_dropped_connection_is_reopened(sshd: Mapping[str, str], tmp_path: Path) -> None:
    from pilot.data.transfer import retried

    backend = SFTPBackend()
    place = _url(sshd, _remote_dir(sshd))
    options = _opts(sshd)
    try:
        backend.create_place(place, options)
        for conn in backend._pool.values():  # the server side goes away under us
            backend._run(lambda c=conn: _close(c))
        src = tmp_path / "f"
        src.write_bytes(b"after the drop")
        retried(backend.put, str(src), f"{place}/f", options)
        assert [f.name for f in backend.list(place, options)] == ["f"]
        assert backend.connections_made == 2
        backend.remove(place, options)
    finally:
        backend.close()


async def _close(conn: Any) -> None:
    conn.conn.close()
    await conn.conn.wait_closed()
