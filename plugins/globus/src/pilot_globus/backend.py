"""The Globus data backend: PilotData at ``globus://<collection>/<path>``.

``<collection>`` is a collection UUID or the name of a ``[globus.collections.<name>]`` of the
site configuration. Places are made with ``mkdir``, listed with ``ls``, removed with a delete
task. Copies between places on Globus are one Transfer task per batch (``copy_many``), with
checksums verified by Globus. Files from and to this host go over the collection's HTTPS
server, or in one Transfer task through the site's local collection when the local files lie
under its root (``put_many``/``get_many``). PilotData options (``extra``): ``task_timeout``
(seconds a task may stay ACTIVE); never secrets.
"""

from __future__ import annotations

import builtins
import concurrent.futures
import os
import posixpath
import threading
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pilot.errors import PilotError
from pilot.files import sha256_of
from pilot.plugin.types import FileInfo
from pilot_globus.auth import GlobusAuth
from pilot_globus.config import GlobusSettings, load_settings
from pilot_globus.https import CollectionHTTPS, is_temp, temp_name
from pilot_globus.tasks import Tasks

if TYPE_CHECKING:
    import globus_sdk

T = TypeVar("T")
LS_LIMIT = 100_000
HTTPS_THREADS = 4
#: Option keys that would put a secret into the coordination store.
SECRET_WORDS = ("secret", "token", "password", "credential")


class GlobusBackend:
    """``DataBackend`` and ``BatchDataBackend`` for ``globus://``; safe to use from threads."""

    def __init__(self, settings: GlobusSettings | None = None) -> None:
        self._given = settings
        self._settings: GlobusSettings | None = None
        self._auth: GlobusAuth | None = None
        self._servers: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- plumbing -----------------------------------------------------------------------------
    @property
    def settings(self) -> GlobusSettings:
        with self._lock:
            if self._settings is None:
                self._settings = self._given or load_settings()
            return self._settings

    @property
    def auth(self) -> GlobusAuth:
        settings = self.settings
        with self._lock:
            if self._auth is None:
                self._auth = GlobusAuth(settings)
                self._tasks = Tasks(self._auth)
                self._https = CollectionHTTPS(self._auth, self._server_of)
            return self._auth

    @property
    def tasks(self) -> Tasks:
        self.auth  # noqa: B018 - builds the helpers
        return self._tasks

    @property
    def https(self) -> CollectionHTTPS:
        self.auth  # noqa: B018 - builds the helpers
        return self._https

    def parse(self, url: str) -> tuple[str, str]:
        """``(collection UUID, absolute path)`` of a ``globus://`` URL."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() != "globus" or not parts.netloc:
            raise PilotError(f"{url!r} is not a globus://<collection>/<path> URL")
        if "@" in parts.netloc or ":" in parts.netloc or parts.query or parts.fragment:
            raise PilotError(f"{parts.scheme}://{parts.hostname}/...: a globus:// URL names a collection and a path "
                             "only (no user, password, port or query; credentials come from `pilot globus login` "
                             "or the site configuration)")
        collection = self.settings.collection_id(parts.netloc)
        raw = urllib.parse.unquote(parts.path) or "/"
        if ".." in raw.split("/") or "\0" in raw:
            raise PilotError(f"globus://{parts.netloc}{parts.path}: '..' and NUL are not allowed in a path")
        path = posixpath.normpath(raw)
        if path.startswith("/~"):
            path = path[1:]
        return collection, path

    def _timeout(self, options: Mapping[str, Any]) -> float:
        for key in options:
            if any(word in key.lower() for word in SECRET_WORDS):
                raise PilotError(f"PilotData option {key!r}: secrets never go into a PilotData description (it is "
                                 "kept in the coordination store); use `pilot globus login` or the site's client "
                                 "credentials file", key=key)
        value = options.get("task_timeout", self.settings.task_timeout)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise PilotError(f"task_timeout must be a positive number of seconds, got {value!r}", key="task_timeout")
        return float(value)

    def _call(self, collections: Sequence[str], func: Callable[[globus_sdk.TransferClient], T]) -> T:
        return self.auth.call(collections, func)

    def _server_of(self, collection: str) -> str:
        with self._lock:
            known = self._servers.get(collection)
        if known is not None:
            return known
        document = self._call([collection], lambda tc: tc.get_endpoint(collection).data)
        server = document.get("https_server")
        if not server:
            raise PilotError(f"collection {collection} ({document.get('display_name')}) has no HTTPS server; files "
                             "from this host reach it only through a local collection ([globus] local_collection)")
        with self._lock:
            self._servers[collection] = str(server)
        return str(server)

    # -- places -------------------------------------------------------------------------------
    def _mkdir(self, collection: str, path: str) -> None:
        import globus_sdk

        def make(tc: globus_sdk.TransferClient) -> str:
            try:
                tc.operation_mkdir(collection, path)
            except globus_sdk.TransferAPIError as exc:
                if "Exists" in (exc.code or ""):
                    return "exists"
                if exc.http_status == 404 or "NotFound" in (exc.code or ""):
                    return "no parent"
                raise
            return "made"

        if path in ("/", "~", ""):
            return
        if self._call([collection], make) == "no parent":
            self._mkdir(collection, posixpath.dirname(path))
            self._call([collection], make)

    def create_place(self, url: str, options: Mapping[str, Any]) -> None:
        self._timeout(options)
        self._mkdir(*self.parse(url))

    def _ls(self, collection: str, path: str) -> list[dict[str, Any]] | None:
        """Every entry of directory ``path``, or None when it does not exist."""
        import globus_sdk

        def page(offset: int) -> Callable[[globus_sdk.TransferClient], list[dict[str, Any]] | None]:
            def ls(tc: globus_sdk.TransferClient) -> list[dict[str, Any]] | None:
                try:
                    return [dict(e) for e in tc.operation_ls(collection, path=path, limit=LS_LIMIT, offset=offset)]
                except globus_sdk.TransferAPIError as exc:
                    code = exc.code or ""
                    if exc.http_status in (404, 400) and ("NotFound" in code or "NotDirectory" in code
                                                          or "DirListingFailed" in code):
                        return None
                    raise
            return ls

        entries: list[dict[str, Any]] = []
        while True:
            got = self._call([collection], page(len(entries)))
            if got is None:
                return entries or None
            entries.extend(got)
            if len(got) < LS_LIMIT:
                return entries

    def list(self, url: str, options: Mapping[str, Any]) -> builtins.list[FileInfo]:
        self._timeout(options)
        entries = self._ls(*self.parse(url)) or []
        return sorted((FileInfo(e["name"], int(e.get("size") or 0)) for e in entries
                       if e.get("type") == "file" and not is_temp(e["name"])), key=lambda f: f.name)

    def stat(self, url: str, options: Mapping[str, Any]) -> FileInfo:
        import globus_sdk

        collection, path = self.parse(url)

        def stat(tc: globus_sdk.TransferClient) -> dict[str, Any] | None:
            try:
                return dict(tc.operation_stat(collection, path).data)
            except globus_sdk.TransferAPIError as exc:
                if exc.http_status == 404:
                    return None
                raise

        entry = self._call([collection], stat)
        if entry is None:
            raise PilotError(f"no such file: {url}")
        if entry.get("type") != "file":
            raise PilotError(f"not a file: {url} (a {entry.get('type')})")
        return FileInfo(posixpath.basename(path), int(entry.get("size") or 0))

    def remove(self, url: str, options: Mapping[str, Any]) -> None:
        collection, path = self.parse(url)
        self.tasks.delete(collection, [path], self._timeout(options))

    def local_path(self, url: str) -> str | None:
        collection, path = self.parse(url)
        root = self.settings.collection(collection).local_path
        if root is None or not os.path.isdir(root) or path.startswith("~"):
            return None
        return os.path.join(root, path.lstrip("/"))

    def close(self) -> None:
        with self._lock:
            auth, self._auth = self._auth, None
        if auth is not None:
            auth.close()

    # -- moving files -------------------------------------------------------------------------
    def _sizes(self, collection: str, paths: Sequence[str]) -> builtins.list[int]:
        """Sizes of files just written, one ``ls`` per directory."""
        listed: dict[str, dict[str, int]] = {}
        sizes = []
        for path in paths:
            directory = posixpath.dirname(path)
            if directory not in listed:
                listed[directory] = {e["name"]: int(e.get("size") or 0) for e in self._ls(collection, directory) or []
                                     if e.get("type") == "file"}
            size = listed[directory].get(posixpath.basename(path))
            if size is None:
                raise PilotError(f"Globus reported success but {path} is not on collection {collection}")
            sizes.append(size)
        return sizes

    def copy_many(self, pairs: Sequence[tuple[str, str]], options: Mapping[str, Any]) -> builtins.list[FileInfo]:
        timeout = self._timeout(options)
        parsed = [(self.parse(src), self.parse(dst)) for src, dst in pairs]
        (src_collection, _), (dst_collection, _) = parsed[0]
        if any(s[0] != src_collection or d[0] != dst_collection for s, d in parsed):
            return [self.copy_many([pair], options)[0] for pair in pairs]
        self.tasks.transfer(src_collection, dst_collection, [(s[1], d[1]) for s, d in parsed], timeout)
        sizes = self._sizes(dst_collection, [d[1] for _, d in parsed])
        return [FileInfo(posixpath.basename(d[1]), size) for (_, d), size in zip(parsed, sizes, strict=True)]

    def copy(self, src_url: str, dst_url: str, options: Mapping[str, Any]) -> FileInfo:
        return self.copy_many([(src_url, dst_url)], options)[0]

    def _local_relative(self, paths: Sequence[str]) -> tuple[str, builtins.list[str]] | None:
        """``(local collection, collection paths)`` when every local path lies under the local
        collection's root, else None."""
        settings = self.settings
        if settings.local_collection is None:
            return None
        root = settings.collection(settings.local_collection).local_path
        if root is None or not os.path.isdir(root):
            return None
        root = os.path.realpath(root)
        out = []
        for path in paths:
            real = os.path.realpath(os.path.abspath(path))
            if os.path.commonpath([root, real]) != root:
                return None
            out.append("/" + os.path.relpath(real, root))
        return settings.local_collection, out

    def _each(self, func: Callable[[tuple[str, str]], FileInfo],
              pairs: Sequence[tuple[str, str]]) -> builtins.list[FileInfo]:
        if len(pairs) == 1:
            return [func(pairs[0])]
        with concurrent.futures.ThreadPoolExecutor(min(HTTPS_THREADS, len(pairs))) as pool:
            return list(pool.map(func, pairs))

    def put_many(self, pairs: Sequence[tuple[str, str]], options: Mapping[str, Any]) -> builtins.list[FileInfo]:
        timeout = self._timeout(options)
        targets = [self.parse(url) for _, url in pairs]
        local = self._local_relative([path for path, _ in pairs])
        collections = {c for c, _ in targets}
        if local is not None and len(collections) == 1:
            for path, _ in pairs:
                if not os.path.isfile(path):
                    raise PilotError(f"no such file: {path}")
            (collection,) = collections
            self.tasks.transfer(local[0], collection, list(zip(local[1], [p for _, p in targets], strict=True)),
                                timeout)
            sizes = self._sizes(collection, [p for _, p in targets])
            return [FileInfo(posixpath.basename(p), size, sha256_of(src))
                    for (src, _), (_, p), size in zip(pairs, targets, sizes, strict=True)]
        return self._each(lambda pair: self._put_https(pair[0], *self.parse(pair[1])), pairs)

    def _put_https(self, local_path: str, collection: str, path: str) -> FileInfo:
        directory = posixpath.dirname(path)
        temp = posixpath.join(directory, temp_name(posixpath.basename(path)))
        try:
            sent = self.https.upload(local_path, collection, temp)
        except PilotError as exc:
            if "not found" not in str(exc) or not os.path.isfile(local_path):
                raise
            self._mkdir(collection, directory)  # the parent did not exist
            sent = self.https.upload(local_path, collection, temp)
        self._call([collection], lambda tc: tc.operation_rename(collection, temp, path))
        stored = self.https.size(collection, path)
        if stored != sent.size:
            raise PilotError(f"storing {local_path} at {path} on collection {collection}: size mismatch "
                             f"({stored} bytes stored, {sent.size} sent)")
        return FileInfo(posixpath.basename(path), stored, sent.checksum)

    def put(self, local_path: str, url: str, options: Mapping[str, Any]) -> FileInfo:
        return self.put_many([(local_path, url)], options)[0]

    def get_many(self, pairs: Sequence[tuple[str, str]], options: Mapping[str, Any]) -> builtins.list[FileInfo]:
        timeout = self._timeout(options)
        sources = [self.parse(url) for url, _ in pairs]
        local = self._local_relative([path for _, path in pairs])
        collections = {c for c, _ in sources}
        if local is not None and len(collections) == 1:
            (collection,) = collections
            self.tasks.transfer(collection, local[0], list(zip([p for _, p in sources], local[1], strict=True)),
                                timeout)
            return [FileInfo(os.path.basename(path), os.path.getsize(path), sha256_of(path)) for _, path in pairs]
        return self._each(lambda pair: self.https.download(*self.parse(pair[0]), pair[1]), pairs)

    def get(self, url: str, local_path: str, options: Mapping[str, Any]) -> FileInfo:
        return self.get_many([(url, local_path)], options)[0]
