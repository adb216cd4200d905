"""Globus authentication, the Globus way: one ``globus_sdk`` app per backend.

- With a confidential client (``PILOT_GLOBUS_CLIENT_ID``/``PILOT_GLOBUS_CLIENT_SECRET`` or the
  site's ``client_credentials_file``) it is a ``ClientApp``: tokens come from the client
  credentials grant, in memory, for unattended agents.
- Otherwise it is a ``UserApp`` over the token store that ``pilot globus login`` wrote (a 0600
  JSON file in a 0700 directory under the user's configuration directory). Refresh tokens
  renew access tokens as they expire. It never starts a login by itself: a missing login or
  consent raises ``PilotError`` saying which command to run.

Tokens are only ever sent as ``Authorization`` headers to Globus services and collections; none
reaches the coordination store, a log, a URL or an error message.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pilot.errors import PilotError
from pilot_globus.config import GlobusSettings, as_uuid

if TYPE_CHECKING:
    import globus_sdk

APP_NAME = "pilot"
TOKEN_FILE = "tokens.json"  # noqa: S105 - a file name
T = TypeVar("T")


def login_hint(collections: Iterable[str] = ()) -> str:
    """The command that gets the tokens and consents for ``collections``."""
    return "pilot globus login" + "".join(f" --collection {c}" for c in sorted(set(collections)))


def token_file(settings: GlobusSettings) -> Path:
    """Where ``pilot globus login`` keeps tokens."""
    return settings.token_dir / TOKEN_FILE


def open_token_storage(settings: GlobusSettings) -> globus_sdk.token_storage.JSONTokenStorage:
    """The login token store, its directory created private (0700) first. Writes replace the
    file atomically: agents on many nodes may refresh tokens in it at the same time."""
    import json
    import tempfile
    from collections.abc import Mapping

    import globus_sdk
    from globus_sdk.token_storage import JSONTokenStorage, TokenStorageData

    class AtomicJSONTokenStorage(JSONTokenStorage):
        def _replace(self, data: Mapping[str, object]) -> None:
            directory = os.path.dirname(self.filepath)
            with self.user_only_umask():
                fd, temp = tempfile.mkstemp(prefix=".tokens-", dir=directory)
                try:
                    with os.fdopen(fd, "w", encoding="utf-8") as out:
                        json.dump(data, out)
                    os.replace(temp, self.filepath)
                except BaseException:
                    os.unlink(temp)
                    raise

        def store_token_data_by_resource_server(self, token_data_by_resource_server: Mapping[str, TokenStorageData]
                                                ) -> None:
            data = self._load()
            spaced = data["data"].setdefault(self.namespace, {})
            for server, token_data in token_data_by_resource_server.items():
                spaced[server] = token_data.to_dict()
            data["globus-sdk.version"] = globus_sdk.__version__
            self._replace(data)

        def remove_token_data(self, resource_server: str) -> bool:
            data = self._load()
            popped = data["data"].get(self.namespace, {}).pop(resource_server, None)
            self._replace(data)
            return popped is not None

    settings.token_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(settings.token_dir, 0o700)
    return AtomicJSONTokenStorage(token_file(settings), namespace=f"{APP_NAME}/{settings.client_id}")


class GlobusAuth:
    """The app, its scope requirements and the Transfer client, behind one lock (a GlobusApp is
    not thread safe)."""

    def __init__(self, settings: GlobusSettings) -> None:
        self.settings = settings
        self.lock = threading.RLock()
        self._app: globus_sdk.GlobusApp | None = None
        self._transfer: globus_sdk.TransferClient | None = None
        self._data_access: set[str] = set()
        self._https: set[str] = set()

    def _build_app(self) -> globus_sdk.GlobusApp:
        import globus_sdk

        settings = self.settings
        if settings.credentials is not None:
            config = globus_sdk.GlobusAppConfig(token_storage="memory",  # noqa: S106 - a storage kind
                                                token_validation_error_handler=None)
            return globus_sdk.ClientApp(APP_NAME, client_id=settings.credentials.client_id,
                                        client_secret=settings.credentials.client_secret, config=config)
        if settings.client_id is None:
            raise PilotError("Globus is not set up: name a native app client id ([globus] client_id in the site "
                             "configuration, or PILOT_GLOBUS_CLIENT_ID) and run `pilot globus login`, or give a "
                             "confidential client (PILOT_GLOBUS_CLIENT_ID and PILOT_GLOBUS_CLIENT_SECRET, or "
                             "[globus] client_credentials_file)")
        if not token_file(settings).exists():
            raise PilotError(f"not logged in to Globus (no tokens in {token_file(settings)}): run "
                             f"`{login_hint()}`")
        config = globus_sdk.GlobusAppConfig(token_storage=open_token_storage(settings), request_refresh_tokens=True,
                                            token_validation_error_handler=_explain)
        return globus_sdk.UserApp(APP_NAME, client_id=settings.client_id, config=config)

    @property
    def app(self) -> globus_sdk.GlobusApp:
        with self.lock:
            if self._app is None:
                self._app = self._build_app()
            return self._app

    def transfer(self, collections: Iterable[str]) -> globus_sdk.TransferClient:
        """The Transfer client, its scope carrying the ``data_access`` consent of every
        collection in ``collections`` that needs one."""
        import globus_sdk

        with self.lock:
            if self._transfer is None:
                self._transfer = globus_sdk.TransferClient(app=self.app, app_name=APP_NAME)
            needed = {c for c in collections if self.settings.collection(c).data_access} - self._data_access
            if needed:
                self._transfer.add_app_data_access_scope(sorted(needed))
                self._data_access |= needed
            return self._transfer

    def call(self, collections: Iterable[str], func: Callable[[globus_sdk.TransferClient], T]) -> T:
        """``func(transfer_client)`` under the lock, with Globus errors made ``PilotError``s."""
        from pilot_globus.errors import translated

        collections = list(collections)
        with self.lock, translated(collections):
            return func(self.transfer(collections))

    def https_header(self, collection: str, *, renew: bool = False) -> str:
        """The ``Authorization`` header for the collection's HTTPS server (``renew`` after a 401)."""
        from globus_sdk.scopes import GCSCollectionScopes

        from pilot_globus.errors import translated

        with self.lock, translated([collection]):
            if collection not in self._https:
                self.app.add_scope_requirements({collection: [GCSCollectionScopes(collection).https]})
                self._https.add(collection)
            authorizer = self.app.get_authorizer(collection)
            if renew and not authorizer.handle_missing_authorization():
                raise PilotError(f"Globus refused the token for collection {collection}'s HTTPS server; run "
                                 f"`{login_hint([collection])}`")
            header = authorizer.get_authorization_header()
        if not header:
            raise PilotError(f"no token for collection {collection}'s HTTPS server: run `{login_hint([collection])}`")
        return header

    def close(self) -> None:
        with self.lock:
            if self._transfer is not None:
                self._transfer.close()
            if self._app is not None:
                self._app.close()
            self._app = self._transfer = None
            self._data_access.clear()
            self._https.clear()


def _explain(app: globus_sdk.GlobusApp, error: globus_sdk.token_storage.TokenValidationError) -> None:
    """A token validation error handler that never starts a login: it says what to run."""
    from globus_sdk.token_storage.validating_token_storage import MissingTokenError, UnmetScopeRequirementsError

    collections = [rs for rs in app.scope_requirements if as_uuid(rs) is not None]
    if isinstance(error, MissingTokenError) and as_uuid(error.resource_server) is not None:
        collections = [error.resource_server]
        what = f"no token for collection {error.resource_server}"
    elif isinstance(error, UnmetScopeRequirementsError):
        what = "a Globus consent is missing (a collection's data_access, or a scope added since you logged in)"
    elif isinstance(error, MissingTokenError):
        what = f"no Globus token for {error.resource_server}"
    else:
        what = "the Globus login has expired"
    raise NeedsLogin(what, collections)


class NeedsLogin(PilotError):
    """Tokens or consents are missing; ``translated`` adds the command to run for the collections
    at hand."""

    def __init__(self, what: str, collections: Iterable[str] = ()) -> None:
        super().__init__(what)
        self.what = what
        self.collections = list(collections)
