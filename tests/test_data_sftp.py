"""End to end with data behind the real sshd: an SFTP PilotData, the agent staging inputs in over
SFTP and results back out, replication between SFTP and local PilotData, and two PilotData on
different labels with two pilots where each unit runs beside its data."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path

import pytest

from pilot import ComputeDataService, PilotComputeService, PilotDataService, PilotError, State


@pytest.fixture
def sftp_pd(sshd: Mapping[str, str]) -> dict[str, object]:
    """A PilotData description on the test sshd, in a fresh remote directory."""
    return {"service_url": f"{sshd['url']}{sshd['home']}/pilot-e2e/{uuid.uuid4().hex}",
            "extra": {"known_hosts": sshd["known_hosts"], "identity_file": sshd["identity_file"]}}


def _pilot(pcs: PilotComputeService, slots: int = 2, **labels: str) -> object:
    return pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": slots,
                             "working_directory": os.path.join(os.getcwd(), "work"), **labels})


def test_data_behind_sftp_staged_in_and_results_out(pilot_env: object, sftp_pd: dict[str, object],
                                                     tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("pear\napple\nfig\n")
    pds = PilotDataService()
    pd = pds.create_pilot(sftp_pd)
    inputs = pd.submit_data_unit({"file_urls": [str(words)]})
    results = pd.submit_data_unit({"file_urls": []})
    assert inputs.wait(timeout=60) == State.Running
    assert inputs.list()["words.txt"]["pilot_data"][0].startswith("sftp://")
    pcs = PilotComputeService()
    _pilot(pcs)
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    cds.add_pilot_data_service(pds)
    units = cds.submit_compute_units([{"executable": "sort", "arguments": ["words.txt", ">", f"sorted-{n}.out"],
                                       "input_data": [inputs.get_url()],
                                       "output_data": [{results.get_url(): ["*.out"]}]} for n in range(4)])
    cds.wait(timeout=120)
    for unit in units:
        assert unit.get_state() == State.Done, unit.get_details()["reason"]
        assert Path(unit.get_local_working_directory(), "words.txt").read_text() == "pear\napple\nfig\n"
    assert sorted(results.list()) == [f"sorted-{n}.out" for n in range(4)]
    exported = results.export(tmp_path / "results")
    assert {Path(p).read_text() for p in exported} == {"apple\nfig\npear\n"}
    pd.cancel(remove_data=True)


def test_file_transfer_from_an_sftp_url(pilot_env: object, sshd: Mapping[str, str], sftp_pd: dict[str, object],
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PILOT_SSH_KNOWN_HOSTS", sshd["known_hosts"])  # the agent inherits these
    monkeypatch.setenv("PILOT_SSH_IDENTITY", sshd["identity_file"])
    pd = PilotDataService().create_pilot(sftp_pd)
    src = tmp_path / "remote.cfg"
    src.write_text("over sftp")
    du = pd.submit_data_unit({"file_urls": [str(src)]})
    du.wait(timeout=60)
    remote = du.list()["remote.cfg"]["pilot_data"][0]
    pcs = PilotComputeService()
    pilot = _pilot(pcs, 1)
    unit = pilot.submit_compute_unit({"executable": "cat", "arguments": ["remote.cfg"],  # type: ignore[attr-defined]
                                      "file_transfer": [f"{remote} > SUBJOB_WORK_DIR",
                                                        f"SUBJOB_WORK_DIR/stdout.txt > {sftp_pd['service_url']}/out/"]})
    assert unit.wait(timeout=60) == State.Done, unit.get_details()["reason"]
    assert Path(unit.get_local_working_directory(), "stdout.txt").read_text() == "over sftp"
    back = pd.submit_data_unit({"file_urls": [f"{sftp_pd['service_url']}/out/stdout.txt"]})
    assert back.wait(timeout=60) == State.Running
    pd.cancel(remove_data=True)


def test_replicate_between_sftp_and_local_pilot_data(pilot_env: object, sftp_pd: dict[str, object],
                                                      tmp_path: Path) -> None:
    pds = PilotDataService()
    remote = pds.create_pilot(sftp_pd)
    local = pds.create_pilot({"service_url": str(tmp_path / "local")})
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(300_000))
    du = remote.submit_data_unit({"file_urls": [str(blob)]})
    du.wait(timeout=60)
    local.submit_data_unit(data_unit=du)
    assert du.wait(timeout=60) == State.Running
    assert {p.id for p in du.list_pilot_data()} == {remote.id, local.id}
    copy = Path(next(u for u in du.list()["blob.bin"]["pilot_data"] if u.startswith("file://"))[7:])
    assert copy.read_bytes() == blob.read_bytes()
    remote.cancel(remove_data=True)


def test_an_unknown_host_is_refused_at_creation(pilot_env: object, sftp_pd: dict[str, object],
                                                tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    bad = {**sftp_pd, "extra": {**sftp_pd["extra"], "known_hosts": str(empty)}}  # type: ignore[dict-item]
    with pytest.raises(PilotError, match="not trusted"):
        PilotDataService().create_pilot(bad)


def test_credentials_stay_out_of_the_store(pilot_env: object, sftp_pd: dict[str, object], tmp_path: Path) -> None:
    pd = PilotDataService().create_pilot(sftp_pd)
    (tmp_path / "f").write_text("f")
    pd.submit_data_unit({"file_urls": [str(tmp_path / "f")]}).wait(timeout=60)
    key = Path(sftp_pd["extra"]["identity_file"]).read_text()  # type: ignore[index]
    store = Path(os.environ["PILOT_HOME"], "store.sqlite").read_bytes()
    assert key.splitlines()[1].encode() not in store
    with pytest.raises(PilotError, match="passwords are not accepted"):
        PilotDataService().create_pilot({**sftp_pd, "service_url": "sftp://u:secret@127.0.0.1:2222/tmp/x"})
    pd.cancel(remove_data=True)


def test_two_pilot_data_on_two_labels_each_unit_beside_its_data(pilot_env: object, sftp_pd: dict[str, object],
                                                                 tmp_path: Path) -> None:
    pds = PilotDataService()
    remote = pds.create_pilot({**sftp_pd, "affinity_datacenter_label": "remote-site"})
    local = pds.create_pilot({"service_url": str(tmp_path / "near"), "affinity_datacenter_label": "home"})
    pcs = PilotComputeService()
    by_label = {"remote-site": _pilot(pcs, 2, affinity_datacenter_label="remote-site"),
                "home": _pilot(pcs, 2, affinity_datacenter_label="home")}
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    cds.add_pilot_data_service(pds)
    dus = {}
    for label in by_label:
        path = tmp_path / f"{label}.txt"
        path.write_text(label)
        dus[label] = cds.submit_data_unit({"file_urls": [str(path)], "affinity_datacenter_label": label})
    for label, du in dus.items():
        assert du.wait(timeout=60) == State.Running
        assert [p.id for p in du.list_pilot_data()] == [(remote if label == "remote-site" else local).id]
    labels = ["remote-site", "home"] * 5
    units = cds.submit_compute_units([{"executable": "cat", "arguments": [f"{label}.txt"],
                                       "input_data": [dus[label].get_url()]} for label in labels])
    cds.wait(timeout=120)
    for label, unit in zip(labels, units, strict=True):
        details = unit.get_details()
        assert details["state"] == State.Done, details["reason"]
        assert details["pilot"] == by_label[label].get_url()  # type: ignore[attr-defined]
        assert Path(details["sandbox"], "stdout.txt").read_text() == label
    remote.cancel(remove_data=True)
