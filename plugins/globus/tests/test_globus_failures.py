"""What goes wrong with Globus, produced by the FAKE Globus services of ``pilot_globus.testing``
(Globus cannot be reached from the test machines): a task that fails with events, a checksum
mismatch, HTTP 5xx retried without running a submission twice, a task ACTIVE past its timeout."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from pilot import PilotDataService, PilotError, State
from pilot.testing.fixtures import PilotEnv

from globus_helpers import Site


def _du_on(site: Site, tmp_path: Path, count: int = 3, collection: str | None = None) -> tuple[object, object]:
    pds = PilotDataService()
    pd = pds.create_pilot({"service_url": f"globus://{collection or site.a}/pd-{uuid.uuid4().hex[:8]}"})
    paths = []
    for n in range(count):
        path = tmp_path / f"in{n}.bin"
        path.write_bytes(os.urandom(2000 + n))
        paths.append(str(path))
    du = pd.submit_data_unit({"file_urls": paths})
    assert du.wait(timeout=60) == State.Running, du.get_details()["reason"]
    return pds, du


def _replica_failure(du: object, pd: object) -> str:
    details = du.get_details()  # type: ignore[attr-defined]
    assert details["replicas"][pd.id] == "Failed", details  # type: ignore[attr-defined]
    return str(details["replica_reasons"][pd.id])  # type: ignore[attr-defined]


def test_a_task_that_fails_reports_its_error_events_as_the_reason(pilot_env: PilotEnv, site: Site,
                                                                  tmp_path: Path) -> None:
    pds, du = _du_on(site, tmp_path)
    for stored in site.a_root.rglob("in1.bin"):
        stored.unlink()  # gone from the collection behind pilot's back
    target = pds.create_pilot({"service_url": f"globus://{site.b}/target"})  # type: ignore[attr-defined]
    du.add_pilot_data(target)  # type: ignore[attr-defined]
    du.wait(timeout=60)  # type: ignore[attr-defined]
    reason = _replica_failure(du, target)
    assert "FAILED" in reason and "FILE_NOT_FOUND" in reason and "in1.bin" in reason, reason


def test_a_checksum_mismatch_in_a_transfer_fails_the_replica(pilot_env: PilotEnv, site: Site, tmp_path: Path) -> None:
    pds, du = _du_on(site, tmp_path)
    site.fake.corrupt(site.b)
    target = pds.create_pilot({"service_url": f"globus://{site.b}/target"})  # type: ignore[attr-defined]
    du.add_pilot_data(target)  # type: ignore[attr-defined]
    du.wait(timeout=60)  # type: ignore[attr-defined]
    assert "VERIFY_CHECKSUM" in _replica_failure(du, target)


def test_a_file_corrupted_at_rest_is_caught_when_fetched(pilot_env: PilotEnv, site: Site, tmp_path: Path) -> None:
    site.fake.corrupt(site.a)  # what the collection stores differs from what was sent
    _, du = _du_on(site, tmp_path, count=1)
    with pytest.raises(PilotError, match="checksum mismatch"):
        du.export(tmp_path / "out")  # type: ignore[attr-defined]
    assert not (tmp_path / "out" / "in0.bin").exists()


def test_a_lost_answer_to_a_submission_is_retried_without_a_second_task(pilot_env: PilotEnv, site: Site,
                                                                        tmp_path: Path) -> None:
    pds, du = _du_on(site, tmp_path)
    target = pds.create_pilot({"service_url": f"globus://{site.b}/target"})  # type: ignore[attr-defined]
    site.fake.fail_next("transfer", "POST", "/v0.10/transfer", 503, count=2, after_processing=True)
    before = set(site.fake.tasks)
    site.fake.reset_calls()
    du.add_pilot_data(target)  # type: ignore[attr-defined]
    du.wait(timeout=60)  # type: ignore[attr-defined]
    assert du.get_details()["replicas"][target.id] == "Running"  # type: ignore[attr-defined]
    submissions = [c for c in site.fake.transfer_calls() if c[1] == "POST" and c[2].endswith("/transfer")]
    assert len(submissions) == 3  # two answers lost, the third one heard
    assert len(set(site.fake.tasks) - before) == 1  # one task, not three


def test_https_5xx_are_retried(pilot_env: PilotEnv, site: Site, tmp_path: Path) -> None:
    site.fake.fail_next("https", "PUT", "", 503, count=2)
    site.fake.fail_next("https", "GET", "", 502, count=1)
    _, du = _du_on(site, tmp_path, count=1)
    exported = du.export(tmp_path / "out")  # type: ignore[attr-defined]
    assert Path(exported[0]).read_bytes() == (tmp_path / "in0.bin").read_bytes()


def test_a_task_active_past_its_timeout_is_canceled_and_fails(pilot_env: PilotEnv, site: Site,
                                                              tmp_path: Path) -> None:
    pds, du = _du_on(site, tmp_path)
    site.fake.stall(site.b)
    target = pds.create_pilot({"service_url": f"globus://{site.b}/target",  # type: ignore[attr-defined]
                               "extra": {"task_timeout": 1}})
    before = set(site.fake.tasks)
    du.add_pilot_data(target)  # type: ignore[attr-defined]
    du.wait(timeout=60)  # type: ignore[attr-defined]
    reason = _replica_failure(du, target)
    assert "still ACTIVE after 1 s" in reason and "CONNECTION_FAILED" in reason and "canceled" in reason, reason
    (task_id,) = set(site.fake.tasks) - before
    assert site.fake.tasks[task_id]["status"] == "FAILED"  # canceled at Globus, not left running


def test_a_secret_in_pilot_data_options_is_refused(pilot_env: PilotEnv, site: Site) -> None:
    with pytest.raises(PilotError, match="pilot globus login"):
        PilotDataService().create_pilot({"service_url": f"globus://{site.a}/x", "extra": {"client_secret": "s3cret"}})
