"""``pilot globus``: log in to Globus (the native-app flow), see the login, log out.

    pilot globus login [--collection C ...]   # C: a collection UUID or a configured name
    pilot globus whoami
    pilot globus logout

``login`` prints a URL, you approve in a browser and paste the code back. The tokens (refresh
tokens included, so agents keep working for months) go to a 0600 file in a 0700 directory; the
collections you named are remembered and asked for again at the next login. Tokens are never
printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

from pilot.errors import PilotError
from pilot_globus.auth import APP_NAME, open_token_storage, token_file
from pilot_globus.config import GlobusSettings, load_settings

COLLECTIONS_FILE = "collections.json"


def remembered(settings: GlobusSettings) -> list[str]:
    """The collections earlier logins asked consent for."""
    try:
        data = json.loads((settings.token_dir / COLLECTIONS_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [str(c) for c in data] if isinstance(data, list) else []


def _remember(settings: GlobusSettings, collections: Sequence[str]) -> None:
    path = settings.token_dir / COLLECTIONS_FILE
    temp = path.with_suffix(".tmp")
    with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        json.dump(sorted(set(collections)), out)
    os.replace(temp, path)


def login(settings: GlobusSettings, named: Sequence[str]) -> list[str]:
    """Run the native-app login flow for the Transfer service and the collections' HTTPS and
    data_access scopes; the collections consented."""
    import globus_sdk
    from globus_sdk.scopes import GCSCollectionScopes, TransferScopes

    if settings.client_id is None:
        raise PilotError("`pilot globus login` needs a native app client id: register one at "
                         "https://app.globus.org/settings/developers and set [globus] client_id in the site "
                         "configuration (or PILOT_GLOBUS_CLIENT_ID)")
    collections = sorted({*(settings.collection_id(c) for c in named), *remembered(settings),
                          *(c.id for c in settings.collections.values())})
    data_access = [GCSCollectionScopes(c).data_access.with_optional(True) for c in collections
                   if settings.collection(c).data_access]
    requirements: dict[str, list[globus_sdk.Scope]] = {
        TransferScopes.resource_server: [TransferScopes.all.with_dependencies(data_access)]}
    for collection in collections:
        requirements[collection] = [GCSCollectionScopes(collection).https]
    config = globus_sdk.GlobusAppConfig(token_storage=open_token_storage(settings), request_refresh_tokens=True,
                                        login_flow_manager="command-line")
    with globus_sdk.UserApp(APP_NAME, client_id=settings.client_id, scope_requirements=requirements,
                            config=config) as app:
        app.login(force=True)
    os.chmod(token_file(settings), 0o600)
    _remember(settings, collections)
    return collections


def whoami(settings: GlobusSettings) -> str:
    """Who is logged in and which tokens are kept (never the tokens)."""
    if settings.credentials is not None:
        return f"confidential client {settings.credentials.client_id} (from {settings.credentials.source})"
    if not token_file(settings).exists():
        raise PilotError("not logged in to Globus: run `pilot globus login`")
    storage = open_token_storage(settings)
    lines, identity = [], None
    for server, data in sorted(storage.get_token_data_by_resource_server().items()):
        left = data.expires_at_seconds - time.time()
        state = "refreshable" if data.refresh_token else ("valid" if left > 0 else "expired")
        lines.append(f"  {server}: {state}, access token {'expires in ' if left > 0 else 'expired '}"
                     f"{abs(left) / 60:.0f} min {'' if left > 0 else 'ago'}".rstrip())
        identity = identity or data.identity_id
    head = f"logged in as identity {identity}" if identity else "logged in"
    return "\n".join([f"{head} (tokens in {token_file(settings)})", *lines])


def logout(settings: GlobusSettings) -> None:
    """Revoke and forget every stored token."""
    import globus_sdk

    if settings.client_id is None or not token_file(settings).exists():
        return
    config = globus_sdk.GlobusAppConfig(token_storage=open_token_storage(settings), token_validation_error_handler=None)
    with globus_sdk.UserApp(APP_NAME, client_id=settings.client_id, config=config) as app:
        app.logout(sweep=True)
    for name in (COLLECTIONS_FILE,):
        (settings.token_dir / name).unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pilot globus``."""
    parser = argparse.ArgumentParser(prog="pilot globus", description="Globus logins for pilot's globus:// PilotData.")
    sub = parser.add_subparsers(dest="command", required=True)
    log_in = sub.add_parser("login", help="log in with the native-app flow (prints a URL, asks for the code)")
    log_in.add_argument("--collection", action="append", default=[], metavar="C",
                        help="also consent to this collection's HTTPS and data_access scopes (UUID or configured "
                             "name; repeatable; remembered for later logins)")
    sub.add_parser("whoami", help="who is logged in and which tokens are kept")
    sub.add_parser("logout", help="revoke and forget the stored tokens")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        if args.command == "login":
            collections = login(settings, args.collection)
            print(f"logged in to Globus; tokens kept in {token_file(settings)}"
                  + (f"; collections: {', '.join(collections)}" if collections else ""))
        elif args.command == "whoami":
            print(whoami(settings))
        else:
            logout(settings)
            print("logged out of Globus; stored tokens revoked and removed")
    except PilotError as exc:
        print(f"pilot globus {args.command}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a globus-sdk error: its code and message, never a token
        from pilot_globus.errors import describe

        print(f"pilot globus {args.command}: {type(exc).__name__}: {describe(exc)}", file=sys.stderr)
        return 1
    return 0
