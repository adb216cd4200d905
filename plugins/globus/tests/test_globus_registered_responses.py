"""The backend against globus-sdk's own registered responses (``globus_sdk.testing``: the
response documents globus-sdk ships for its tests, served by ``responses``; NOT the Globus
service, which cannot be reached from the test machines). These check what goes over the wire:
the Transfer documents the backend submits and how it reads Globus's answers and errors."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import responses
from globus_sdk.testing import RegisteredResponse, load_response

from pilot import PilotError
from pilot_globus.backend import GlobusBackend
from pilot_globus.config import Credentials, GlobusSettings

SRC, DST = str(uuid.uuid4()), str(uuid.uuid4())
TASK = str(uuid.uuid4())


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[responses.RequestsMock]:
    """globus-sdk pointed at its production URLs, every request answered by ``responses``."""
    for name in ("GLOBUS_SDK_SERVICE_URL_AUTH", "GLOBUS_SDK_SERVICE_URL_TRANSFER", "GLOBUS_SDK_VERIFY_SSL"):
        monkeypatch.delenv(name, raising=False)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def _backend() -> GlobusBackend:
    """A backend with a confidential client (its token comes from the registered responses)."""
    return GlobusBackend(GlobusSettings(credentials=Credentials(str(uuid.uuid4()), "registered-responses-secret"),
                                        task_timeout=30))


def _task(status: str, **more: object) -> RegisteredResponse:
    return RegisteredResponse(service="transfer", path=f"/v0.10/task/{TASK}", json={
        "DATA_TYPE": "task", "task_id": TASK, "type": "TRANSFER", "status": status, "nice_status": None,
        "files": 3, "files_transferred": 3, "files_skipped": 0, "fatal_error": None, **more})


def test_a_batch_is_one_transfer_document_with_checksums_verified(mocked: responses.RequestsMock) -> None:
    token = load_response("auth.oauth2_client_credentials_tokens", requests_mock=mocked).metadata["access_token"]
    submission = load_response("transfer.get_submission_id", requests_mock=mocked).metadata["submission_id"]
    load_response(RegisteredResponse(service="transfer", method="POST", path="/v0.10/transfer", json={
        "DATA_TYPE": "transfer_result", "code": "Accepted", "task_id": TASK, "submission_id": submission}),
        requests_mock=mocked)
    load_response(_task("SUCCEEDED"), requests_mock=mocked)
    load_response(RegisteredResponse(service="transfer", path=f"/v0.10/operation/endpoint/{DST}/ls", json={
        "DATA_TYPE": "file_list", "DATA": [{"DATA_TYPE": "file", "name": f"f{n}", "type": "file", "size": 10 + n}
                                          for n in range(3)]}), requests_mock=mocked)
    backend = _backend()
    got = backend.copy_many([(f"globus://{SRC}/du/f{n}", f"globus://{DST}/copy/f{n}") for n in range(3)], {})
    assert [(f.name, f.size) for f in got] == [("f0", 10), ("f1", 11), ("f2", 12)]
    (submit,) = [c.request for c in mocked.calls if c.request.url.endswith("/v0.10/transfer")]
    body = json.loads(submit.body)
    assert (body["DATA_TYPE"], body["source_endpoint"], body["destination_endpoint"]) == ("transfer", SRC, DST)
    assert body["verify_checksum"] is True and body["sync_level"] in (3, "checksum")
    assert body["submission_id"] == submission
    assert [(i["source_path"], i["destination_path"]) for i in body["DATA"]] == [
        (f"/du/f{n}", f"/copy/f{n}") for n in range(3)]
    assert submit.headers["Authorization"] == f"Bearer {token}"
    backend.close()


def test_a_refused_submission_is_a_pilot_error_with_globus_code(mocked: responses.RequestsMock) -> None:
    load_response("auth.oauth2_client_credentials_tokens", requests_mock=mocked)
    load_response("transfer.get_submission_id", requests_mock=mocked)
    load_response("transfer.submit_transfer", case="failure", requests_mock=mocked)
    with pytest.raises(PilotError, match=r"400 ClientError.BadRequest.NoTransferItems"):
        _backend().copy(f"globus://{SRC}/a", f"globus://{DST}/a", {})


def test_a_failed_task_reports_its_fatal_error_and_events(mocked: responses.RequestsMock) -> None:
    load_response("auth.oauth2_client_credentials_tokens", requests_mock=mocked)
    load_response("transfer.get_submission_id", requests_mock=mocked)
    load_response("transfer.submit_transfer", requests_mock=mocked)
    from globus_sdk.testing.data.transfer._common import TASK_ID

    load_response(RegisteredResponse(service="transfer", path=f"/v0.10/task/{TASK_ID}", json={
        "DATA_TYPE": "task", "task_id": TASK_ID, "status": "FAILED", "nice_status": None,
        "fatal_error": {"code": "PERMISSION_DENIED", "description": "permission denied"}}), requests_mock=mocked)
    load_response(RegisteredResponse(service="transfer", path=f"/v0.10/task/{TASK_ID}/event_list", json={
        "DATA_TYPE": "event_list", "DATA": [{"DATA_TYPE": "event", "code": "PERMISSION_DENIED", "is_error": True,
                                             "description": "Error (transfer)",
                                             "details": "/du/a: Permission denied"}]}),
        requests_mock=mocked)
    with pytest.raises(PilotError) as caught:
        _backend().copy(f"globus://{SRC}/du/a", f"globus://{DST}/a", {})
    message = str(caught.value)
    assert f"Globus task {TASK_ID} FAILED" in message and "/du/a: Permission denied" in message
    events = [c.request for c in mocked.calls if "/event_list" in c.request.url]
    assert "filter=is_error%3A1" in events[0].url
