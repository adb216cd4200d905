"""Tests of ``pilot_globus.testing.FakeGlobus`` (a FAKE of Globus for tests) driven by globus-sdk itself.

They prove the fake answers the way globus-sdk expects: GlobusApp (ClientApp, UserApp), TransferClient,
the authorizers, retries, GARE/consent parsing, IDTokenDecoder, and collection HTTPS access.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import globus_sdk
import pytest
import requests
from globus_sdk.login_flows import CommandLineLoginFlowManager
from globus_sdk.token_storage import JSONTokenStorage

from pilot_globus.testing import FakeGlobus

TRANSFER_SCOPE = "urn:globus:auth:scope:transfer.api.globus.org:all"


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGlobus]:
    with FakeGlobus(tmp_path / "fake") as instance:
        for key, value in instance.environ().items():
            monkeypatch.setenv(key, value)
        yield instance


@pytest.fixture
def colls(fake: FakeGlobus, tmp_path: Path) -> tuple[str, str]:
    return fake.add_collection(tmp_path / "a", display_name="a"), fake.add_collection(tmp_path / "b", display_name="b")


def client_app(fake: FakeGlobus, **requirements: Any) -> globus_sdk.ClientApp:
    client_id, secret = fake.register_confidential_client()
    config = globus_sdk.GlobusAppConfig(token_storage="memory")
    return globus_sdk.ClientApp(
        "fake-test", client_id=client_id, client_secret=secret, scope_requirements=requirements or None, config=config
    )


def transfer_client(fake: FakeGlobus) -> globus_sdk.TransferClient:
    return globus_sdk.TransferClient(app=client_app(fake))


def wait(tc: globus_sdk.TransferClient, task_id: str, timeout: float = 10.0) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        doc: dict[str, Any] = tc.get_task(task_id).data
        if doc["status"] != "ACTIVE":
            return doc
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} still ACTIVE")


def root(fake: FakeGlobus, coll: str) -> Path:
    return fake.collection_root(coll)


def test_environ_and_tls(fake: FakeGlobus) -> None:
    env = fake.environ()
    assert env["GLOBUS_SDK_SERVICE_URL_AUTH"] == f"{fake.url}/auth/"
    assert env["GLOBUS_SDK_SERVICE_URL_TRANSFER"] == f"{fake.url}/transfer/"
    assert env["GLOBUS_SDK_VERIFY_SSL"] == str(fake.ca_file)
    assert fake.url.startswith("https://127.0.0.1:")
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{fake.url}/auth/.well-known/openid-configuration", timeout=5)
    oidc = requests.get(f"{fake.url}/auth/.well-known/openid-configuration", verify=str(fake.ca_file), timeout=5).json()
    assert requests.get(oidc["jwks_uri"], verify=str(fake.ca_file), timeout=5).json()["keys"][0]["kty"] == "RSA"


def test_filesystem_operations(fake: FakeGlobus, colls: tuple[str, str]) -> None:
    a, _ = colls
    tc = transfer_client(fake)
    doc = tc.get_endpoint(a)
    assert doc["DATA_TYPE"] == "endpoint" and doc["id"] == a
    assert doc["entity_type"] == "GCSv5_mapped_collection"
    assert doc["https_server"] == f"{fake.url}/https/{a}"
    assert tc.operation_mkdir(a, "/d").http_status == 202
    with pytest.raises(globus_sdk.TransferAPIError) as exc:
        tc.operation_mkdir(a, "/d")
    assert (exc.value.http_status, exc.value.code) == (502, "ExternalError.MkdirFailed.Exists")
    with pytest.raises(globus_sdk.TransferAPIError) as exc:
        tc.operation_mkdir(a, "/no/such")
    assert exc.value.http_status == 404
    for i in range(3):
        (root(fake, a) / "d" / f"f{i}").write_bytes(b"x" * i)
    (root(fake, a) / "d" / ".hidden").write_text("h")
    listing = tc.operation_ls(a, path="/d")
    assert listing["DATA_TYPE"] == "file_list"
    assert [f["name"] for f in listing] == [".hidden", "f0", "f1", "f2"]
    f2 = next(f for f in listing if f["name"] == "f2")
    assert f2["type"] == "file" and f2["size"] == 2
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00:00", f2["last_modified"])
    assert [f["name"] for f in tc.operation_ls(a, path="/d", limit=2, offset=1)] == ["f0", "f1"]
    assert tc.operation_ls(a, path="/")["DATA"][0] == {**tc.operation_stat(a, "/d").data, "name": "d"}
    assert tc.operation_stat(a, "/d/f1")["type"] == "file"
    cases: list[tuple[Callable[[], object], str | None, int]] = [
        (lambda: tc.operation_ls(a, path="/missing"), "ClientError.NotFound", 404),
        (lambda: tc.operation_ls(a, path="/d/f1"), None, 400),
        (lambda: tc.operation_stat(a, "/missing"), "NotFound", 404),
        (lambda: tc.operation_ls(a, path="/d/../.."), None, 403),
        (lambda: tc.get_endpoint("00000000-0000-0000-0000-000000000000"), "EndpointNotFound", 404),
    ]
    for call, code, status in cases:
        with pytest.raises(globus_sdk.TransferAPIError) as exc:
            call()
        assert exc.value.http_status == status
        assert code is None or exc.value.code == code
    assert tc.operation_rename(a, "/d/f1", "/d/f2")["code"] == "FileRenamed"
    assert (root(fake, a) / "d" / "f2").read_bytes() == b"x"
    assert not (root(fake, a) / "d" / "f1").exists()


def test_transfer_moves_files(fake: FakeGlobus, colls: tuple[str, str]) -> None:
    a, b = colls
    tree = root(fake, a) / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "one").write_bytes(b"1" * 1000)
    (tree / "sub" / "two").write_bytes(b"2" * 10)
    (root(fake, a) / "single").write_bytes(b"single")
    tc = transfer_client(fake)
    td = globus_sdk.TransferData(a, b, label="t1", verify_checksum=True, sync_level="checksum")
    td.add_item("/tree", "/out/tree", recursive=True)
    td.add_item("/single", "/out/deep/single")
    result = tc.submit_transfer(td)
    assert (result.http_status, result["code"]) == (202, "Accepted")
    doc = wait(tc, result["task_id"])
    assert doc["status"] == "SUCCEEDED" and doc["nice_status"] is None and doc["fatal_error"] is None
    assert doc["type"] == "TRANSFER" and doc["label"] == "t1"
    assert (doc["files"], doc["files_transferred"], doc["bytes_transferred"]) == (3, 3, 1016)
    assert doc["bytes_checksummed"] == 1016 and doc["completion_time"]
    out = root(fake, b) / "out"
    assert (out / "tree" / "one").read_bytes() == b"1" * 1000
    assert (out / "tree" / "sub" / "two").read_bytes() == b"2" * 10
    assert (out / "deep" / "single").read_bytes() == b"single"
    assert not [p for p in out.rglob("*.part")]
    # same again at sync_level checksum: everything skipped
    td2 = globus_sdk.TransferData(a, b, sync_level="checksum")
    td2.add_item("/tree", "/out/tree", recursive=True)
    doc2 = wait(tc, tc.submit_transfer(td2)["task_id"])
    assert (doc2["status"], doc2["files_skipped"], doc2["files_transferred"]) == ("SUCCEEDED", 2, 0)
    # delete it, then a missing path fails unless ignore_missing
    dd = globus_sdk.DeleteData(endpoint=b, recursive=True)
    dd.add_item("/out/tree")
    assert wait(tc, tc.submit_delete(dd)["task_id"])["status"] == "SUCCEEDED"
    assert not (out / "tree").exists()
    dd = globus_sdk.DeleteData(endpoint=b, recursive=True)
    dd.add_item("/out/tree")
    failed = wait(tc, tc.submit_delete(dd)["task_id"])
    assert (failed["status"], failed["fatal_error"]["code"]) == ("FAILED", "FILE_NOT_FOUND")
    dd = globus_sdk.DeleteData(endpoint=b, ignore_missing=True)
    dd.add_item("/out/tree")
    assert wait(tc, tc.submit_delete(dd)["task_id"])["status"] == "SUCCEEDED"


def test_missing_source_and_task_delay(fake: FakeGlobus, colls: tuple[str, str]) -> None:
    a, b = colls
    fake.task_delay = 0.3
    tc = transfer_client(fake)
    td = globus_sdk.TransferData(a, b)
    td.add_item("/nope", "/nope")
    task_id = tc.submit_transfer(td)["task_id"]
    queued = tc.get_task(task_id)
    assert (queued["status"], queued["nice_status"]) == ("ACTIVE", "Queued")
    doc = wait(tc, task_id)
    assert doc["status"] == "FAILED" and doc["fatal_error"]["code"] == "FILE_NOT_FOUND"
    errors = tc.task_event_list(task_id, query_params={"filter": "is_error:1"})
    assert [e["code"] for e in errors] == ["FILE_NOT_FOUND"]
    assert all(e["is_error"] for e in errors)
    assert any(not e["is_error"] for e in tc.task_event_list(task_id))
    with pytest.raises(globus_sdk.TransferAPIError) as exc:
        tc.get_task("00000000-0000-0000-0000-000000000000")
    assert exc.value.code == "TaskNotFound"


def test_duplicate_submission(fake: FakeGlobus, colls: tuple[str, str]) -> None:
    a, b = colls
    (root(fake, a) / "f").write_text("f")
    tc = transfer_client(fake)
    td = globus_sdk.TransferData(a, b)
    td.add_item("/f", "/f")
    first = tc.submit_transfer(td)
    again = tc.submit_transfer(td)  # td now carries the submission_id
    assert (again.http_status, again["code"]) == (200, "Duplicate")
    assert again["task_id"] == first["task_id"]
    assert len(fake.tasks) == 1
    td["submission_id"] = "11111111-1111-1111-1111-111111111111"
    with pytest.raises(globus_sdk.TransferAPIError) as exc:
        tc.submit_transfer(td)
    assert exc.value.http_status == 400


def test_corrupt_collection_fails_checksum(fake: FakeGlobus, colls: tuple[str, str]) -> None:
    a, b = colls
    (root(fake, a) / "f").write_bytes(b"payload" * 100)
    fake.corrupt(b)
    tc = transfer_client(fake)
    td = globus_sdk.TransferData(a, b, verify_checksum=True)
    td.add_item("/f", "/f")
    task_id = tc.submit_transfer(td)["task_id"]
    doc = wait(tc, task_id)
    assert doc["status"] == "FAILED"
    assert doc["fatal_error"]["code"] == doc["nice_status"] == "VERIFY_CHECKSUM"
    (event,) = tc.task_event_list(task_id, query_params={"filter": "is_error:1"})
    assert (event["code"], event["description"], event["is_error"]) == (
        "VERIFY_CHECKSUM", "checksum verification failed", True
    )
    assert re.search(r"expected [0-9a-f]{32} got [0-9a-f]{32}", event["details"])
    assert not (root(fake, b) / "f").exists()
    td = globus_sdk.TransferData(a, b)  # without verification the corruption lands silently
    td.add_item("/f", "/f")
    assert wait(tc, tc.submit_transfer(td)["task_id"])["status"] == "SUCCEEDED"
    assert (root(fake, b) / "f").read_bytes() != (root(fake, a) / "f").read_bytes()


def test_stall_and_cancel(fake: FakeGlobus, colls: tuple[str, str]) -> None:
    a, b = colls
    (root(fake, a) / "f").write_text("f")
    fake.stall(b)
    tc = transfer_client(fake)
    td = globus_sdk.TransferData(a, b)
    td.add_item("/f", "/f")
    task_id = tc.submit_transfer(td)["task_id"]
    end = time.monotonic() + 5
    while tc.get_task(task_id)["nice_status"] != "CONNECTION_FAILED":
        assert time.monotonic() < end
        time.sleep(0.02)
    time.sleep(0.1)
    assert tc.get_task(task_id)["status"] == "ACTIVE"
    errors = tc.task_event_list(task_id, query_params={"filter": "is_error:1"})
    assert [e["code"] for e in errors] == ["CONNECTION_FAILED"]
    assert tc.cancel_task(task_id)["code"] == "Canceled"
    doc = tc.get_task(task_id)
    assert doc["status"] == "FAILED" and doc["fatal_error"]["code"] == "CANCELED"
    assert tc.cancel_task(task_id)["code"] == "TaskComplete"
    assert not (root(fake, b) / "f").exists()
    fake.unstall(b)
    td = globus_sdk.TransferData(a, b)
    td.add_item("/f", "/f")
    assert wait(tc, tc.submit_transfer(td)["task_id"])["status"] == "SUCCEEDED"


def test_fail_next_is_retried(fake: FakeGlobus, colls: tuple[str, str]) -> None:
    a, b = colls
    (root(fake, a) / "f").write_text("f")
    tc = transfer_client(fake)
    tc.operation_ls(a)
    fake.reset_calls()
    fake.fail_next("transfer", "GET", "/ls", status=503)
    assert tc.operation_ls(a, path="/")["DATA"][0]["name"] == "f"
    assert [c[2].rsplit("/", 1)[-1] for c in fake.transfer_calls()] == ["ls", "ls"]
    # a lost answer: the submission IS processed, globus-sdk retries, the fake says Duplicate
    fake.fail_next("transfer", "POST", "/v0.10/transfer", status=502, after_processing=True)
    td = globus_sdk.TransferData(a, b)
    td.add_item("/f", "/f")
    result = tc.submit_transfer(td)
    assert result["code"] == "Duplicate"
    assert list(fake.tasks) == [result["task_id"]]
    fake.fail_next("transfer", "*", "/ls", status=500, count=10)
    impatient = transfer_client(fake)
    impatient.retry_config.max_retries = 1
    with pytest.raises(globus_sdk.TransferAPIError) as exc:
        impatient.operation_ls(a)
    assert exc.value.http_status == 500


def test_access_token_expiry_and_refresh(fake: FakeGlobus, colls: tuple[str, str]) -> None:
    a, _ = colls
    client_id, secret = fake.register_confidential_client()
    cc = globus_sdk.ConfidentialAppAuthClient(client_id, secret)
    tokens = cc.oauth2_client_credentials_tokens(requested_scopes=TRANSFER_SCOPE).by_resource_server
    access = tokens["transfer.api.globus.org"]["access_token"]
    tc = globus_sdk.TransferClient(authorizer=globus_sdk.AccessTokenAuthorizer(access))
    tc.operation_ls(a)
    fake.expire_access_tokens()
    with pytest.raises(globus_sdk.TransferAPIError) as exc:
        tc.operation_ls(a)
    assert (exc.value.http_status, exc.value.code) == (401, "AuthenticationFailed")

    native_id = fake.register_native_client()
    native = globus_sdk.NativeAppAuthClient(native_id)
    native.oauth2_start_flow(requested_scopes=f"openid profile {TRANSFER_SCOPE}", refresh_tokens=True)
    page = requests.get(native.oauth2_get_authorize_url(), verify=str(fake.ca_file), timeout=5)
    code = re.search(r"^code: (\S+)$", page.text, re.MULTILINE)
    assert page.status_code == 200 and code
    response = native.oauth2_exchange_code_for_tokens(code.group(1))
    decoded = response.decode_id_token()
    assert decoded["sub"] == fake.user_id and decoded["aud"] == native_id
    assert decoded["identity_set"][0]["sub"] == fake.user_id
    transfer = response.by_resource_server["transfer.api.globus.org"]
    assert transfer["refresh_token"] and transfer["scope"] == TRANSFER_SCOPE
    authorizer = globus_sdk.RefreshTokenAuthorizer(
        transfer["refresh_token"], native, access_token=transfer["access_token"],
        expires_at=transfer["expires_at_seconds"],
    )
    tc = globus_sdk.TransferClient(authorizer=authorizer)
    tc.operation_ls(a)
    fake.expire_access_tokens()
    fake.reset_calls()
    tc.operation_ls(a)  # 401, refresh grant, retry
    assert [c[:2] for c in fake.calls] == [("transfer", "GET"), ("auth", "POST"), ("transfer", "GET")]
    native.oauth2_revoke_token(transfer["refresh_token"])
    with pytest.raises(globus_sdk.AuthAPIError) as aexc:
        native.oauth2_refresh_token(transfer["refresh_token"])
    assert aexc.value.http_status == 400 and aexc.value.raw_json is not None
    assert aexc.value.raw_json["error"] == "invalid_grant"
    with pytest.raises(globus_sdk.AuthAPIError) as aexc:
        cc.oauth2_client_credentials_tokens(requested_scopes="urn:no:such:scope")
    assert aexc.value.http_status == 400 and aexc.value.raw_json is not None
    assert aexc.value.raw_json["error"] == "invalid_scope"
    with pytest.raises(globus_sdk.AuthAPIError) as aexc:
        globus_sdk.ConfidentialAppAuthClient(client_id, "wrong").oauth2_client_credentials_tokens(TRANSFER_SCOPE)
    assert aexc.value.http_status == 401


def test_consent_required(fake: FakeGlobus, tmp_path: Path) -> None:
    guarded = fake.add_collection(tmp_path / "g", display_name="guarded", require_consent=True)
    tc = transfer_client(fake)
    with pytest.raises(globus_sdk.TransferAPIError) as exc:
        tc.operation_ls(guarded)
    err = exc.value
    assert (err.http_status, err.code) == (403, "ConsentRequired")
    assert err.info.consent_required
    scope = f"{TRANSFER_SCOPE}[*https://auth.globus.org/scopes/{guarded}/data_access]"
    assert err.info.consent_required.required_scopes == [scope]
    gare = globus_sdk.gare.to_gare(err)
    assert gare is not None and gare.authorization_parameters.required_scopes == [scope]
    app = client_app(fake, **{"transfer.api.globus.org": [scope]})
    assert globus_sdk.TransferClient(app=app).operation_ls(guarded)["DATA"] == []
    assert any(c["scope_name"].endswith(f"{guarded}/data_access") for cs in fake.consents.values() for c in cs)


class _ScriptedLogin(CommandLineLoginFlowManager):
    """The user: read the authorize page of the fake and type its code."""

    ca_file = ""
    code = ""

    def print_authorize_url(self, authorize_url: str) -> None:
        page = requests.get(authorize_url, verify=self.ca_file, timeout=5)
        match = re.search(r"^code: (\S+)$", page.text, re.MULTILINE)
        assert match, page.text
        self.code = match.group(1)

    def prompt_for_code(self) -> str:
        return self.code


def test_user_app_login(
    fake: FakeGlobus, colls: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = colls
    guarded = fake.add_collection(tmp_path / "g2", display_name="g2", require_consent=True)
    monkeypatch.setattr(_ScriptedLogin, "ca_file", str(fake.ca_file))
    storage = JSONTokenStorage(tmp_path / "tokens.json")
    config = globus_sdk.GlobusAppConfig(
        login_flow_manager=_ScriptedLogin, token_storage=storage, request_refresh_tokens=True
    )
    app = globus_sdk.UserApp("fake-user-test", client_id=fake.register_native_client(), config=config)
    tc = globus_sdk.TransferClient(app=app).add_app_data_access_scope(guarded)
    assert tc.operation_ls(guarded)["DATA"] == []
    assert tc.operation_ls(a)["DATA"] == []
    assert app.token_storage.identity_id == fake.user_id
    stored = storage.get_token_data("transfer.api.globus.org")
    assert stored is not None and stored.refresh_token
    assert ("auth", "GET", f"/v2/api/identities/{fake.user_id}/consents") in fake.calls
    fake.expire_access_tokens()
    assert tc.operation_ls(a)["DATA"] == []  # refreshed transparently


def test_https_server(fake: FakeGlobus, colls: tuple[str, str]) -> None:
    a, b = colls
    client_id, secret = fake.register_confidential_client()
    cc = globus_sdk.ConfidentialAppAuthClient(client_id, secret)
    scopes = f"https://auth.globus.org/scopes/{a}/https https://auth.globus.org/scopes/{b}/https"
    tokens = cc.oauth2_client_credentials_tokens(requested_scopes=scopes).by_resource_server
    auth_a = {"Authorization": f"Bearer {tokens[a]['access_token']}"}
    base = f"{fake.url}/https/{a}"
    kw: dict[str, Any] = {"verify": str(fake.ca_file), "timeout": 5}
    (root(fake, a) / "d").mkdir()
    assert requests.put(f"{base}/d/x.bin", data=b"0123456789", headers=auth_a, **kw).status_code == 201
    assert requests.put(f"{base}/d/x.bin", data=b"abcdefghij", headers=auth_a, **kw).status_code == 200
    assert (root(fake, a) / "d" / "x.bin").read_bytes() == b"abcdefghij"
    got = requests.get(f"{base}/d/x.bin", headers=auth_a, **kw)
    assert (got.status_code, got.content, got.headers["Content-Length"]) == (200, b"abcdefghij", "10")
    part = requests.get(f"{base}/d/x.bin", headers={**auth_a, "Range": "bytes=2-4"}, **kw)
    assert (part.status_code, part.content) == (206, b"cde")
    head = requests.head(f"{base}/d/x.bin", headers=auth_a, **kw)
    assert (head.status_code, head.headers["Content-Length"], head.content) == (200, "10", b"")
    chunked = requests.put(f"{base}/d/c.bin", data=iter([b"ab", b"cd"]), headers=auth_a, **kw)
    assert chunked.status_code == 201 and (root(fake, a) / "d" / "c.bin").read_bytes() == b"abcd"
    with (root(fake, a) / "d" / "x.bin").open("rb") as fh:
        assert requests.put(f"{base}/d/y.bin", data=fh, headers=auth_a, **kw).status_code == 201
    assert requests.head(f"{base}/missing", headers=auth_a, **kw).status_code == 404
    assert requests.get(f"{base}/missing", headers=auth_a, **kw).status_code == 404
    assert requests.get(f"{base}/d", headers=auth_a, **kw).status_code in (400, 403)
    assert requests.put(f"{base}/no/dir/f", data=b"x", headers=auth_a, **kw).status_code == 404
    assert requests.get(f"{base}/%2E%2E/%2E%2E/etc/passwd", headers=auth_a, **kw).status_code == 403
    assert requests.get(f"{base}/d/x.bin", **kw).status_code == 401
    wrong = {"Authorization": f"Bearer {tokens[b]['access_token']}"}
    assert requests.get(f"{base}/d/x.bin", headers=wrong, **kw).status_code == 403
    fake.fail_next("https", "GET", "x.bin", status=503)
    failed = requests.get(f"{base}/d/x.bin", headers=auth_a, **kw)
    assert failed.status_code == 503 and failed.json()["code"]
    fake.corrupt(a)
    requests.put(f"{base}/d/z.bin", data=b"zzzz", headers=auth_a, **kw)
    assert (root(fake, a) / "d" / "z.bin").read_bytes() != b"zzzz"
    fake.expire_access_tokens()
    assert requests.get(f"{base}/d/x.bin", headers=auth_a, **kw).status_code == 401
