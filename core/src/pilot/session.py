"""A session owns the plugin manager, the settings and the open stores of one process.

Services take ``session=`` for tests and embedding; without it they share one created lazily on
first use (never at import).
"""

from __future__ import annotations

import inspect
import os
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path

from pilot.errors import PilotError
from pilot.log import get_logger
from pilot.plugin.manager import PluginManager
from pilot.plugin.types import DataBackend, ResourceAdaptor
from pilot.store import CoordinationStore
from pilot.urls import scheme_of

HOME_ENV = "PILOT_HOME"
STORE_ENV = "PILOT_COORDINATION_URL"
HEARTBEAT_TIMEOUT_ENV = "PILOT_HEARTBEAT_TIMEOUT"
DEFAULT_HEARTBEAT_TIMEOUT = 60.0


def pilot_home(environ: Mapping[str, str] | None = None) -> Path:
    """``$PILOT_HOME``, default ``~/.pilot``: the embedded store lives here."""
    env = os.environ if environ is None else environ
    return Path(env.get(HOME_ENV) or "~/.pilot").expanduser().absolute()


def default_store_url(environ: Mapping[str, str] | None = None) -> str:
    """``$PILOT_COORDINATION_URL``, else the embedded SQLite store under ``pilot_home()``."""
    env = os.environ if environ is None else environ
    return env.get(STORE_ENV) or f"sqlite://{urllib.parse.quote(str(pilot_home(env) / 'store.sqlite'))}"


def positive_seconds(raw: str, what: str) -> float:
    """``raw`` as a positive number of seconds; ``PilotError`` naming ``what`` otherwise."""
    try:
        value = float(raw)
    except ValueError:
        raise PilotError(f"{what} must be a number of seconds, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise PilotError(f"{what} must be a positive number of seconds, got {raw!r}")
    return value


def heartbeat_timeout_from_env(environ: Mapping[str, str] | None = None) -> float:
    """``$PILOT_HEARTBEAT_TIMEOUT`` in seconds, default 60."""
    raw = (os.environ if environ is None else environ).get(HEARTBEAT_TIMEOUT_ENV)
    return positive_seconds(raw, HEARTBEAT_TIMEOUT_ENV) if raw else DEFAULT_HEARTBEAT_TIMEOUT


class Session:
    """Plugins and open stores for one process."""

    def __init__(self, plugins: PluginManager | None = None) -> None:
        self._plugins = plugins
        self._stores: dict[str, CoordinationStore] = {}
        self._adaptors: dict[str, ResourceAdaptor] = {}
        #: pilot id -> when this session last asked the pilot's batch system for its state
        self.status_asked: dict[str, float] = {}
        self._backends: dict[str, DataBackend] = {}
        self._lock = threading.RLock()

    @property
    def plugins(self) -> PluginManager:
        """The plugin manager, loaded on first use."""
        with self._lock:
            if self._plugins is None:
                self._plugins = PluginManager()
            return self._plugins

    def store(self, url: str | None = None, *, create: bool = True) -> CoordinationStore:
        """The open store for ``url`` (default: ``default_store_url()``), shared in this session.
        ``create=False`` (reconnecting by an object URL): a store that does not exist yet is a
        ``PilotError``, not created (for store plugins whose ``open`` takes ``create``)."""
        url = url or default_store_url()
        with self._lock:
            store = self._stores.get(url)
            if store is None:
                opener: Callable[..., CoordinationStore] = self.plugins.store_for(scheme_of(url)).open
                store = opener(url) if create or not _takes_create(opener) else opener(url, create=False)
                self._stores[url] = store
                self._stores[store.url] = store
            return store

    def adaptor(self, service_url: str) -> ResourceAdaptor:
        """The resource adaptor for ``service_url``, one per URL in this session."""
        with self._lock:
            adaptor = self._adaptors.get(service_url)
            if adaptor is None:
                adaptor = self.plugins.adaptor_for(scheme_of(service_url)).factory(service_url)
                self._adaptors[service_url] = adaptor
            return adaptor

    def data_backend(self, url: str) -> DataBackend:
        """The data backend for ``url``'s scheme (a bare path is ``file``), one per backend in
        this session; ``PilotError`` for a scheme no plugin registered."""
        record = self.plugins.data_backend_for(scheme_of(url))
        with self._lock:
            backend = self._backends.get(record.name)
            if backend is None:
                backend = self._backends[record.name] = record.factory()
            return backend

    def close(self) -> None:
        """Close every store, data backend and adaptor (those with ``close()``) opened by this
        session."""
        with self._lock:
            for adaptor in self._adaptors.values():
                close = getattr(adaptor, "close", None)
                try:
                    if close is not None:
                        close()
                except Exception as exc:  # closing is best effort
                    get_logger().debug("resource adaptor close failed", error=str(exc))
            self._adaptors.clear()
            for backend in self._backends.values():
                try:
                    backend.close()
                except Exception as exc:  # closing is best effort
                    get_logger().debug("data backend close failed", error=str(exc))
            self._backends.clear()
            for store in {id(s): s for s in self._stores.values()}.values():
                store.close()
            self._stores.clear()


def _takes_create(opener: Callable[..., CoordinationStore]) -> bool:
    try:
        return "create" in inspect.signature(opener).parameters
    except (TypeError, ValueError):
        return False


_default: Session | None = None
_default_lock = threading.Lock()


def default_session() -> Session:
    """The process-wide session, created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Session()
        return _default
