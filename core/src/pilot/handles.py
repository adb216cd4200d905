"""What every user-facing object that lives in the coordination store shares: it is built from
an id by the library, or reconnected from its object URL by the user, in any process; it has
``id`` and ``url`` (BigJob's attributes) beside ``get_id()`` and ``get_url()``, and it equals,
and hashes like, its URL string (so ``du.get_url() in pd.list_data_units()`` holds)."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from pilot import urls
from pilot.errors import PilotError
from pilot.session import Session, default_session
from pilot.store import CoordinationStore


def open_url(url: str, kind: str, session: Session | None) -> tuple[Session, CoordinationStore, str]:
    """Session, store and id for an object URL of ``kind``; the store must exist already."""
    parsed = urls.parse(url, kind)
    session = session or default_session()
    return session, session.store(parsed.store_url, create=False), parsed.id


class UrlIdentity:
    """Identity by object URL: equal to a handle with the same URL and to the URL string, and
    hashed like that string. Base of every object users hold, services included."""

    __slots__ = ()

    id: str

    def get_url(self) -> str:
        """The URL that reconnects to this object from any process."""
        raise NotImplementedError

    def get_id(self) -> str:
        """The object's id."""
        return self.id

    @property
    def url(self) -> str:
        """The object's URL (BigJob's attribute; the same as ``get_url()``)."""
        return self.get_url()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, UrlIdentity):
            return self.get_url() == other.get_url()
        if isinstance(other, str):
            return self.get_url() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.get_url())


class StoredObject(UrlIdentity, abc.ABC):
    """Base of ComputeUnit, PilotCompute, DataUnit and PilotData."""

    __slots__ = ("_session", "_store", "_url", "id")

    KIND: ClassVar[str]      # the kind in its object URL
    URL_ARG: ClassVar[str]   # the name of the constructor's URL argument
    MADE_BY: ClassVar[str]   # how new ones are made, for the error when no URL is given

    def __init__(self, url: str | None, *, session: Session | None, store: CoordinationStore | None,
                 object_id: str | None) -> None:
        self._url: str | None = None
        if store is not None and object_id is not None:
            self._session, self._store, self.id = session or default_session(), store, object_id
        elif url is not None:
            self._session, self._store, self.id = open_url(url, self.KIND, session)
            self._load()  # a URL naming nothing fails here, not on first use
        else:
            raise PilotError(f"{type(self).__name__} needs {self.URL_ARG} ({self.MADE_BY})")

    @abc.abstractmethod
    def _load(self) -> Any:
        """The object's record; ``PilotError`` when the store does not hold it."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id}>"

    def get_url(self) -> str:
        """The URL that reconnects to this object from any process."""
        if self._url is None:  # cached: lists compare and hash handles by URL
            self._url = urls.make(self._store.url, self.KIND, self.id)
        return self._url
