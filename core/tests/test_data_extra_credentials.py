"""Issue 11, item 8: a PilotData's ``extra`` is kept in the coordination store, so keys naming a
credential (at any depth) and private key material are refused with a PilotError that names the
key, never the value, and says where credentials go instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pilot import PilotDataService, PilotError

SECRET = "hunter2-very-secret"


@pytest.mark.parametrize("extra", [
    {"password": SECRET}, {"Password": SECRET}, {"ssh_password": SECRET}, {"passphrase": SECRET},
    {"secret": SECRET}, {"client-secret": SECRET}, {"token": SECRET}, {"auth_token": SECRET}, {"apiKey": SECRET},
    {"api_key": SECRET}, {"private_key": SECRET}, {"key": SECRET}, {"credentials": {"user": "me"}},
    {"sftp.password": SECRET}, {"options": {"password": SECRET}}, {"hosts": [{"token": SECRET}]},
    {"identity": f"-----BEGIN OPENSSH PRIVATE KEY----- {SECRET} -----END OPENSSH PRIVATE KEY-----"},
])
def test_credential_keys_in_extra_are_refused(tmp_path: Path, extra: dict[str, Any]) -> None:
    with pytest.raises(PilotError) as info:
        PilotDataService().create_pilot({"service_url": str(tmp_path / "store"), "extra": extra})
    message = str(info.value)
    assert SECRET not in message
    assert info.value.key is not None and info.value.key.startswith("extra[")
    assert "identity_file" in message and "never stored" in message
    assert not (tmp_path / "store").exists()  # refused before anything was created


def test_ordinary_extra_keys_are_kept(tmp_path: Path) -> None:
    extra = {"known_hosts": "/etc/ssh/known_hosts", "identity_file": "~/.ssh/id_ed25519", "monkey": 1}
    pd = PilotDataService().create_pilot({"service_url": str(tmp_path / "store"), "extra": extra})
    assert pd.get_details()["description"]["extra"] == extra
