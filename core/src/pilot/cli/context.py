"""What every sub-command shares: the store chosen (``--store`` or as the API chooses it), one
session, and turning a URL or a bare id into (store, id)."""

from __future__ import annotations

import os
import urllib.parse

import click

from pilot import urls
from pilot.errors import PilotError
from pilot.session import STORE_ENV, Session, default_store_url
from pilot.store import CoordinationStore


class CliContext:
    """The ``pilot`` group's context object (``ctx.obj``)."""

    def __init__(self, store_url: str | None) -> None:
        self.store_url = store_url or default_store_url()
        #: no ``--store`` and no ``$PILOT_COORDINATION_URL``: the embedded store under $PILOT_HOME
        self.default = store_url is None and not os.environ.get(STORE_ENV)
        self._session: Session | None = None

    @property
    def session(self) -> Session:
        """The command's session (plugins loaded on first use)."""
        if self._session is None:
            self._session = Session()
            click.get_current_context().call_on_close(self._session.close)
        return self._session

    def store(self, url: str | None = None) -> CoordinationStore:
        """The store at ``url`` (default: the one chosen); it must exist already."""
        if url is None and self.default and not _sqlite_exists(self.store_url):
            raise PilotError(f"nothing here yet: the default store {urls.redact(self.store_url)} is made when a "
                             f"service first uses it (--store URL or ${STORE_ENV} names another store)")
        return self.session.store(url or self.store_url, create=False)

    def locate(self, url_or_id: str, kinds: tuple[str, ...]) -> tuple[CoordinationStore, str, str]:
        """``(store, kind, id)`` for an object URL of one of ``kinds``, or a bare id in the chosen
        store (its kind from its prefix)."""
        if "#" in url_or_id:
            kind = url_or_id.partition("#")[2].partition("/")[0]
            if kind in urls.KINDS and kind not in kinds:
                raise PilotError(f"{urls.redact(url_or_id)!r} is a {kind} URL, not a "
                                 f"{' or '.join(kinds)} URL")
            parsed = urls.parse(url_or_id, kind if kind in kinds else kinds[0])  # a malformed one: the form expected
            return self.store(parsed.store_url), kind, parsed.id
        kind = kind_of_id(url_or_id)
        if kind not in kinds:
            raise PilotError(f"{url_or_id!r} is not the URL or id of a {' or '.join(kinds)}")
        return self.store(), kind, url_or_id


#: Id prefix -> URL kind (ids are ``<prefix>-<uuid4 hex>``).
ID_PREFIXES = {"pcs": "pcs", "pilot": "pilot", "cu": "unit", "cds": "cds", "pds": "pds", "pd": "pilot-data",
               "du": "data-unit"}


def kind_of_id(object_id: str) -> str:
    """The URL kind of an object id, from its prefix ('' when unknown)."""
    return ID_PREFIXES.get(object_id.partition("-")[0], "")


def obj(ctx: click.Context) -> CliContext:
    """The group's context object (made when a sub-command runs without the group, in tests)."""
    found = ctx.find_object(CliContext)
    if found is None:
        found = CliContext(None)
        ctx.obj = found
    return found


def _sqlite_exists(store_url: str) -> bool:
    """Whether the SQLite store file of ``store_url`` exists (True for any other scheme)."""
    parts = urllib.parse.urlsplit(store_url)
    return parts.scheme != "sqlite" or os.path.exists(urllib.parse.unquote(parts.path))
