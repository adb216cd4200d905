"""The ``[globus]`` site configuration, client credentials files and what a site admin is told
when they are wrong; a local collection used for this host's files; no secret in the store or
a log. Services are the FAKE Globus of ``pilot_globus.testing`` (Globus cannot be reached)."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import pytest

from pilot import PilotDataService, PilotError, State
from pilot.testing.fixtures import PilotEnv
from pilot_globus.backend import GlobusBackend
from pilot_globus.config import load_settings

from globus_helpers import Site


def test_a_bad_key_is_named_with_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "site.toml"
    config.write_text(f'[globus]\ntask_timeout = 60\n\n[globus.collections.dtn]\nid = "{uuid.uuid4()}"\n'
                      'local_pth = "/data"\n')
    monkeypatch.setenv("PILOT_SITE_CONFIG", str(config))
    with pytest.raises(PilotError, match=rf"{config}: line 6: globus.collections.dtn.local_pth: unknown key; "
                                         r"did you mean 'local_path'\?"):
        load_settings({})
    config.write_text('[globus]\ntask_timeout = "soon"\n')
    with pytest.raises(PilotError, match=rf"{config}: line 2: globus.task_timeout: must be a positive number"):
        load_settings({})
    config.write_text('[globus]\nlocal_collection = "nowhere"\n')
    with pytest.raises(PilotError, match=r"globus.local_collection: names no \[globus.collections.nowhere\]"):
        load_settings({})
    config.write_text('[globsu]\n')
    with pytest.raises(PilotError, match=r"line 1: globsu: unknown top-level key.*did you mean 'globus'"):
        load_settings({})


def test_an_unknown_collection_name_is_refused_clearly(site: Site) -> None:
    with pytest.raises(PilotError, match=r"globus://nosuch/: not a collection UUID .*configured: a, b"):
        GlobusBackend().list("globus://nosuch/x", {})
    with pytest.raises(PilotError, match="no user, password, port or query"):
        GlobusBackend().list(f"globus://me:pw@{site.a}/x", {})


def test_a_credentials_file_must_be_private(site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client_id, secret = site.fake.register_confidential_client()
    monkeypatch.delenv("PILOT_GLOBUS_CLIENT_ID")
    monkeypatch.delenv("PILOT_GLOBUS_CLIENT_SECRET")
    creds = tmp_path / "globus-client.toml"
    creds.write_text(f'client_id = "{client_id}"\nclient_secret = "{secret}"\n')
    os.chmod(creds, 0o644)
    site.config.write_text(site.config.read_text().replace("[globus]\n", f'[globus]\nclient_credentials_file = '
                                                                       f'"{creds}"\n'))
    with pytest.raises(PilotError, match=rf"{creds} may be read by others \(mode 0644\); make it private: chmod 600"):
        load_settings()
    os.chmod(creds, 0o600)
    settings = load_settings()
    assert settings.credentials is not None and secret not in repr(settings)
    backend = GlobusBackend()
    backend.create_place(f"globus://a/{uuid.uuid4().hex}", {})
    backend.close()


def test_this_hosts_files_move_through_the_local_collection(site: Site, tmp_path: Path) -> None:
    """With ``local_collection`` set, files under its root go by Transfer task, not HTTPS."""
    local_root = tmp_path / "here"
    local_root.mkdir()
    here = site.fake.add_collection(local_root, display_name="here")
    site.config.write_text(site.config.read_text().replace("[globus]\n", '[globus]\nlocal_collection = "here"\n')
                           + f'[globus.collections.here]\nid = "{here}"\nlocal_path = "{local_root}"\n')
    files = []
    for n in range(5):
        path = local_root / "in" / f"f{n}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(os.urandom(500 + n))
        files.append(path)
    backend = GlobusBackend()
    place = f"globus://a/{uuid.uuid4().hex}"
    backend.create_place(place, {})
    site.fake.reset_calls()
    stored = backend.put_many([(str(p), f"{place}/{p.name}") for p in files], {})
    assert [f.size for f in stored] == [p.stat().st_size for p in files]
    assert not [c for c in site.fake.calls if c[0] == "https"]  # one task instead
    assert [t["source_endpoint_id"] for t in site.fake.tasks.values()] == [here]
    (local_root / "out").mkdir()
    back = backend.get_many([(f"{place}/{p.name}", str(local_root / "out" / p.name)) for p in files], {})
    assert [f.checksum for f in back] == [f.checksum for f in stored]
    assert backend.local_path("globus://here/in/f0") == str(local_root / "in" / "f0")
    backend.close()


def test_no_token_or_secret_reaches_the_store_or_a_log(pilot_env: PilotEnv, site: Site, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    source = tmp_path / "data.txt"
    source.write_text("payload")
    pd = PilotDataService().create_pilot({"service_url": f"globus://{site.a}/secrets-{uuid.uuid4().hex[:6]}"})
    du = pd.submit_data_unit({"file_urls": [str(source)]})
    assert du.wait(timeout=60) == State.Running
    du.export(tmp_path / "out")
    secrets = site.fake.issued_secrets()
    assert len(secrets) >= 3  # the client secret, a Transfer token, the collection's HTTPS token
    store_bytes = b"".join(p.read_bytes() for p in (tmp_path / "home").rglob("*") if p.is_file())
    logs = caplog.text + "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*.log"))
    for secret in secrets:
        assert secret.encode() not in store_bytes
        assert secret not in logs


def test_the_site_section_checker_of_pilot_config_check(tmp_path: Path) -> None:
    import pilot_globus

    creds = tmp_path / "creds.toml"
    creds.write_text(f'client_id = "{uuid.uuid4()}"\nclient_secret = "s"\n')
    os.chmod(creds, 0o640)
    config = tmp_path / "site.toml"
    config.write_text(f'[globus]\nclient_credentials_file = "{creds}"\n')
    problems = pilot_globus.check_site_section({"client_credentials_file": str(creds)}, [str(config)])
    assert problems == [f"Globus client credentials file {creds} may be read by others (mode 0640); "
                        f"make it private: chmod 600 {creds}"]
    os.chmod(creds, 0o600)
    assert pilot_globus.check_site_section({"client_credentials_file": str(creds)}, [str(config)]) == []
