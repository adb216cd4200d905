"""Issue 11, item 7: ``$PILOT_REDIS_PASSWORD`` goes only to the server it is meant for. A fake
Redis server (a real TCP server on loopback speaking enough RESP) records every AUTH/HELLO it
receives; a store URL naming it, as a DataUnit URL from a shared workflow file would, must not
bring the password along."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from pilot import PilotError
from pilot_redis.config import find_password, parse_url
from pilot_redis.store import RedisStore

SECRET = "env-s3cret-for-the-real-store"


class FakeRedis:
    """Answers PING/HELLO/AUTH/other commands with NOAUTH, recording the arguments of AUTH and HELLO."""

    def __init__(self) -> None:
        self.seen: list[list[str]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._server = server
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                if not line.startswith(b"*"):
                    continue
                args = []
                for _ in range(int(line[1:])):
                    size = int((await reader.readline())[1:])
                    args.append((await reader.readexactly(size + 2))[:-2].decode(errors="replace"))
                command = args[0].upper() if args else ""
                if command in ("AUTH", "HELLO"):
                    self.seen.append(args)
                writer.write(b"-NOAUTH Authentication required.\r\n" if command != "AUTH"
                             else b"-WRONGPASS invalid username-password pair\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            return
        finally:
            writer.close()

    def close(self) -> None:
        """Stop serving and end the connections' tasks before the loop: a task left pending is
        finalized by some later garbage collection, in whatever the main thread is doing then
        (once, inside the AST compiler of an import, which Python 3.11 cannot take)."""
        async def stop() -> None:
            self._server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def passwords(self) -> list[str]:
        return [arg for args in self.seen for arg in args[1:]]


@pytest.fixture
def fake_redis(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> Iterator[FakeRedis]:
    monkeypatch.setenv("PILOT_REDIS_RETRY_SECONDS", "0")
    monkeypatch.setenv("PILOT_REDIS_CREDENTIALS", f"{tmp_path}/no-credentials")
    server = FakeRedis()
    yield server
    server.close()


def _open(url: str) -> None:
    with pytest.raises(PilotError, match="authentication failed") as info:
        RedisStore.from_url(url)
    assert SECRET not in str(info.value)


def test_another_server_does_not_get_the_environment_password(fake_redis: FakeRedis,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The password is meant for the store of $PILOT_COORDINATION_URL: a URL naming another
    server (here another port on loopback) is opened without it."""
    monkeypatch.setenv("PILOT_REDIS_PASSWORD", SECRET)
    monkeypatch.delenv("PILOT_REDIS_PASSWORD_HOSTS", raising=False)
    monkeypatch.setenv("PILOT_COORDINATION_URL", "redis://127.0.0.1:6390/0")
    _open(f"redis://127.0.0.1:{fake_redis.port}/0?prefix=shared")
    assert SECRET not in fake_redis.passwords()
    monkeypatch.delenv("PILOT_COORDINATION_URL")
    monkeypatch.setenv("PILOT_REDIS_PASSWORD_HOSTS", "127.0.0.1:6390, redis.example.org")
    _open(f"redis://127.0.0.1:{fake_redis.port}/0")
    assert SECRET not in fake_redis.passwords()


def test_the_server_in_scope_gets_it(fake_redis: FakeRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: the fake server does record the password when it is the one meant."""
    monkeypatch.setenv("PILOT_REDIS_PASSWORD", SECRET)
    monkeypatch.setenv("PILOT_REDIS_PASSWORD_HOSTS", f"127.0.0.1:{fake_redis.port}")
    _open(f"redis://127.0.0.1:{fake_redis.port}/0")
    assert SECRET in fake_redis.passwords()


def test_scope_rules() -> None:
    from pilot_redis.config import password_scope

    target = parse_url("redis://login1.example.org:6379/0")
    env = {"PILOT_REDIS_PASSWORD": "p", "PILOT_REDIS_CREDENTIALS": "/nonexistent/creds"}
    assert find_password(target, env) is None  # neither named nor loopback
    assert find_password(parse_url("redis://localhost:7000/0"), env) == "p"
    assert find_password(parse_url("redis://127.0.0.1/0"), env) == "p"
    with_store = {**env, "PILOT_COORDINATION_URL": "redis://login1.example.org/3?prefix=x"}
    assert find_password(target, with_store) == "p"
    assert find_password(parse_url("redis://login1.example.org:7000/0"), with_store) is None
    assert find_password(parse_url("redis://127.0.0.1/0"), with_store) is None  # no longer loopback by default
    hosts = {**env, "PILOT_REDIS_PASSWORD_HOSTS": "LOGIN1.example.org, [::1]:6390"}
    assert find_password(target, hosts) == "p"
    assert find_password(parse_url("redis://[::1]:6390/0"), hosts) == "p"
    assert find_password(parse_url("redis://[::1]:6391/0"), hosts) is None
    assert password_scope(hosts) == [("login1.example.org", None), ("::1", 6390)]
