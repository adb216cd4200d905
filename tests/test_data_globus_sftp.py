"""A DataUnit replicated between an SFTP PilotData on the real test sshd and a Globus PilotData on
the FAKE Globus services of ``pilot_globus.testing`` (Globus cannot be reached from the test
machines), both ways, through this host, verified: the files arrive identical."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from pilot import PilotDataService, State
from pilot_globus.testing import FakeGlobus


@pytest.fixture
def globus_collection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    with FakeGlobus(tmp_path / "fake-globus") as fake:
        root = tmp_path / "collection"
        root.mkdir()
        collection = fake.add_collection(root)
        for key, value in fake.environ().items():
            monkeypatch.setenv(key, value)
        client_id, secret = fake.register_confidential_client()
        monkeypatch.setenv("PILOT_GLOBUS_CLIENT_ID", client_id)
        monkeypatch.setenv("PILOT_GLOBUS_CLIENT_SECRET", secret)
        monkeypatch.setenv("PILOT_SITE_CONFIG", str(tmp_path / "no-site.toml"))
        yield collection, root


def test_replicate_between_sftp_and_globus_both_ways(pilot_env: object, sshd: Mapping[str, str],
                                                     globus_collection: tuple[str, Path], tmp_path: Path) -> None:
    collection, root = globus_collection
    sources = []
    for n in range(5):
        path = tmp_path / f"s{n}.bin"
        path.write_bytes(os.urandom(5000 + n))
        sources.append(path)
    pds = PilotDataService()
    sftp = pds.create_pilot({"service_url": f"{sshd['url']}{sshd['home']}/pilot-globus/{uuid.uuid4().hex}",
                             "extra": {"known_hosts": sshd["known_hosts"], "identity_file": sshd["identity_file"]}})
    globus = pds.create_pilot({"service_url": f"globus://{collection}/from-sftp"})
    back = pds.create_pilot({"service_url": f"{sshd['url']}{sshd['home']}/pilot-globus/{uuid.uuid4().hex}",
                             "extra": {"known_hosts": sshd["known_hosts"], "identity_file": sshd["identity_file"]}})
    du = sftp.submit_data_unit({"file_urls": [str(p) for p in sources]})
    assert du.wait(timeout=60) == State.Running
    du.add_pilot_data(globus)
    du.wait(timeout=60)
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sources}
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("s*.bin")} == digests
    du.add_pilot_data(back)
    du.wait(timeout=60)
    assert set(du.get_details()["replicas"].values()) == {"Running"}, du.get_details()["replica_reasons"]
    for replica in (globus, back):
        du_copy = tmp_path / f"check-{replica.id}"
        assert {Path(p).name: hashlib.sha256(Path(p).read_bytes()).hexdigest()
                for p in _export_from(du, replica, du_copy)} == digests
    sftp.cancel(remove_data=True)
    back.cancel(remove_data=True)
    globus.cancel(remove_data=True)
    assert not list(root.rglob("s*.bin"))


def _export_from(du: object, replica: object, directory: Path) -> list[str]:
    """Every file of ``du`` as stored in ``replica`` (fetched through its backend)."""
    from pilot.data import records, transfer
    from pilot.session import default_session

    data = du._data()  # type: ignore[attr-defined]
    entry = records.replicas_of(data)[replica.id]  # type: ignore[attr-defined]
    place = records.du_place(entry, du.id)  # type: ignore[attr-defined]
    directory.mkdir()
    items = [(transfer.join(place, name), str(directory / name), records.info_of(f, name))
             for name, f in records.files_of(data).items()]
    transfer.get_files(default_session(), items, entry.get("options") or {})
    return [path for _, path, _ in items]
