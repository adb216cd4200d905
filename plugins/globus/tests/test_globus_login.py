"""``pilot globus login`` (the native-app flow), refresh, consents and what a user is told, run as
a user runs them (the command in a subprocess, a code pasted at its prompt) against the FAKE
Globus services of ``pilot_globus.testing``: Globus cannot be reached from the test machines."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from pilot import PilotError
from pilot_globus.backend import GlobusBackend
from pilot_globus.testing import FakeGlobus

from globus_helpers import write_site


class User:
    """A user's environment: the fake's services, a native app in the site configuration, no
    confidential client."""

    def __init__(self, fake: FakeGlobus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fake = fake
        self.root = tmp_path / "collection-a"
        self.root.mkdir()
        self.a = fake.add_collection(self.root, display_name="a")
        self.guarded_root = tmp_path / "collection-c"
        self.guarded_root.mkdir()
        self.guarded = fake.add_collection(self.guarded_root, display_name="c", require_consent=True)
        self.client_id = fake.register_native_client()
        self.token_dir = tmp_path / "home" / ".config" / "pilot" / "globus"
        self.config = write_site(tmp_path / "site.toml", {"a": self.a}, client_id=self.client_id)
        monkeypatch.delenv("PILOT_GLOBUS_CLIENT_ID", raising=False)
        monkeypatch.delenv("PILOT_GLOBUS_CLIENT_SECRET", raising=False)
        monkeypatch.delenv("PILOT_GLOBUS_TOKEN_DIR", raising=False)
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
        monkeypatch.setenv("PILOT_SITE_CONFIG", str(self.config))
        for key, value in fake.environ().items():
            monkeypatch.setenv(key, value)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def pilot_globus(self, *args: str, approve: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``pilot globus ARGS``; for ``login``, open the printed URL as the user's browser
        would and paste the code the page shows."""
        proc = subprocess.Popen([sys.executable, "-m", "pilot.cli", "globus", *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env)
        assert proc.stdout is not None and proc.stdin is not None
        printed = []
        code = ""
        if args[0] == "login" and approve:
            for line in proc.stdout:
                printed.append(line)
                if line.startswith(self.fake.url) and "/authorize" in line:
                    page = requests.get(line.strip(), verify=str(self.fake.ca_file), timeout=10).text
                    code = re.search(r"code: (\S+)", page).group(1)  # type: ignore[union-attr]
                    break
        out, err = proc.communicate(code + "\n", timeout=60)
        return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(printed) + out, err)

    def tokens(self) -> dict[str, dict[str, object]]:
        data = json.loads((self.token_dir / "tokens.json").read_text())
        found: dict[str, dict[str, object]] = {}

        def walk(node: object) -> None:
            if isinstance(node, dict):
                if "access_token" in node and "resource_server" in node:
                    found[str(node["resource_server"])] = node
                for value in node.values():
                    walk(value)
        walk(data)
        return found


@pytest.fixture
def user(fake: FakeGlobus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> User:
    return User(fake, tmp_path, monkeypatch)


def _roundtrip(backend: GlobusBackend, url: str, tmp_path: Path) -> bytes:
    src = tmp_path / f"src-{uuid.uuid4().hex[:6]}"
    src.write_bytes(os.urandom(1000))
    backend.create_place(url, {})
    backend.put(str(src), f"{url}/f", {})
    backend.get(f"{url}/f", str(tmp_path / "back"), {})
    assert (tmp_path / "back").read_bytes() == src.read_bytes()
    return src.read_bytes()


def test_login_keeps_private_tokens_that_work_and_are_never_printed(user: User, tmp_path: Path) -> None:
    done = user.pilot_globus("login")
    assert done.returncode == 0, done.stderr
    assert "Please authenticate with Globus here" in done.stdout and "logged in to Globus" in done.stdout
    assert stat.S_IMODE(os.stat(user.token_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(user.token_dir / "tokens.json").st_mode) == 0o600
    tokens = user.tokens()
    assert {"transfer.api.globus.org", user.a} <= set(tokens)  # the configured collection's https scope too
    whoami = user.pilot_globus("whoami")
    assert whoami.returncode == 0 and user.fake.user_id in whoami.stdout
    for token in tokens.values():
        for secret in (token["access_token"], token.get("refresh_token")):
            assert not secret or secret not in done.stdout + done.stderr + whoami.stdout + whoami.stderr
    backend = GlobusBackend()
    _roundtrip(backend, f"globus://a/u-{uuid.uuid4().hex[:6]}", tmp_path)
    backend.close()


def test_expired_access_tokens_are_refreshed(user: User, tmp_path: Path) -> None:
    assert user.pilot_globus("login").returncode == 0
    backend = GlobusBackend()
    _roundtrip(backend, f"globus://a/r-{uuid.uuid4().hex[:6]}", tmp_path)
    before = {rs: t["access_token"] for rs, t in user.tokens().items()}
    user.fake.expire_access_tokens()
    user.fake.reset_calls()
    _roundtrip(backend, f"globus://a/r-{uuid.uuid4().hex[:6]}", tmp_path)  # the same backend goes on
    fresh = GlobusBackend()  # and a new process's backend, from the token file
    _roundtrip(fresh, f"globus://a/r-{uuid.uuid4().hex[:6]}", tmp_path)
    assert ("auth", "POST", "/v2/oauth2/token") in user.fake.calls  # refresh grants
    after = {rs: t["access_token"] for rs, t in user.tokens().items()}
    assert after["transfer.api.globus.org"] != before["transfer.api.globus.org"]
    backend.close()
    fresh.close()


def test_without_a_login_the_error_says_what_to_run(user: User) -> None:
    with pytest.raises(PilotError, match=r"not logged in to Globus .*run `pilot globus login`"):
        GlobusBackend().create_place(f"globus://{user.a}/x", {})


def test_a_missing_consent_names_the_command_that_grants_it(user: User, tmp_path: Path) -> None:
    assert user.pilot_globus("login").returncode == 0
    backend = GlobusBackend()
    url = f"globus://{user.guarded}/data"
    with pytest.raises(PilotError, match=re.escape(f"run `pilot globus login --collection {user.guarded}`")):
        backend.create_place(url, {})
    backend.close()
    done = user.pilot_globus("login", "--collection", user.guarded)
    assert done.returncode == 0, done.stderr
    assert user.guarded in done.stdout
    backend = GlobusBackend()
    _roundtrip(backend, url, tmp_path)
    assert list(user.guarded_root.rglob("f"))
    backend.close()
    again = user.pilot_globus("login")  # the collection is remembered by later logins
    assert again.returncode == 0 and user.guarded in again.stdout


def test_logout_revokes_and_forgets(user: User) -> None:
    assert user.pilot_globus("login").returncode == 0
    old = user.tokens()["transfer.api.globus.org"]["access_token"]
    done = user.pilot_globus("logout")
    assert done.returncode == 0, done.stderr
    assert user.tokens() == {}
    assert user.fake.calls.count(("auth", "POST", "/v2/oauth2/token/revoke")) >= 2
    with pytest.raises(PilotError, match="pilot globus login"):
        GlobusBackend().create_place(f"globus://{user.a}/x", {})
    assert old


def test_login_without_a_client_id_explains_how_to_get_one(user: User) -> None:
    user.config.write_text("")
    done = user.pilot_globus("login", approve=False)
    assert done.returncode == 1
    assert "native app client id" in done.stderr and "app.globus.org/settings/developers" in done.stderr


def _hammer(token_dir: str, client_id: str, worker: int) -> None:
    from globus_sdk.token_storage import TokenStorageData

    from pilot_globus.auth import open_token_storage
    from pilot_globus.config import GlobusSettings

    storage = open_token_storage(GlobusSettings(client_id=client_id, token_dir=Path(token_dir)))
    for n in range(60):
        storage.store_token_data_by_resource_server({f"rs-{worker}": TokenStorageData(
            f"rs-{worker}", None, "scope", f"token-{n}", None, 2_000_000_000, "Bearer")})


def test_agents_refreshing_at_once_never_leave_a_torn_token_file(tmp_path: Path) -> None:
    """Many processes (agents on many nodes) write the token file at once; every read sees a
    whole file (globus-sdk's own JSONTokenStorage rewrites it in place, which tears)."""
    import multiprocessing

    from pilot_globus.auth import open_token_storage
    from pilot_globus.config import GlobusSettings

    client_id = str(uuid.uuid4())
    settings = GlobusSettings(client_id=client_id, token_dir=tmp_path / "tokens")
    reader = open_token_storage(settings)
    workers = [multiprocessing.get_context("spawn").Process(target=_hammer, args=(str(settings.token_dir),
                                                                                   client_id, w)) for w in range(4)]
    for worker in workers:
        worker.start()
    reads = 0
    while any(w.is_alive() for w in workers):
        reader.get_token_data_by_resource_server()  # raises on a torn file
        reads += 1
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    final = reader.get_token_data_by_resource_server()
    assert reads > 0 and final
    assert stat.S_IMODE(os.stat(settings.token_dir / "tokens.json").st_mode) == 0o600


def test_an_agent_stages_with_the_users_login_read_from_the_token_file(user: User, pilot_env: object,
                                                                       tmp_path: Path) -> None:
    """The agent (a fork pilot's process) has no confidential client: it reads the tokens that
    ``pilot globus login`` left, nothing from the coordination store."""
    from pilot import ComputeDataService, PilotComputeService, PilotDataService, State

    assert user.pilot_globus("login").returncode == 0
    source = tmp_path / "in.txt"
    source.write_text("from globus\n")
    pds = PilotDataService()
    pd = pds.create_pilot({"service_url": f"globus://a/agent-{uuid.uuid4().hex[:6]}"})
    inputs = pd.submit_data_unit({"file_urls": [str(source)]})
    outputs = pd.submit_data_unit({"file_urls": []})
    assert inputs.wait(timeout=60) == State.Running
    pcs = PilotComputeService()
    pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 1,
                      "working_directory": str(tmp_path / "work")})
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)
    unit = cds.submit_compute_unit({"executable": "cp", "arguments": ["in.txt", "out.txt"],
                                    "input_data": [inputs.get_url()],
                                    "output_data": [{outputs.get_url(): ["out.txt"]}]})
    assert unit.wait(timeout=120) == State.Done, unit.get_details()["reason"]
    assert [p.read_text() for p in user.root.rglob("out.txt")] == ["from globus\n"]
    cds.cancel()
