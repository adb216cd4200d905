"""Descriptions: BigJob-style dicts with attribute access, validated when used.

``ComputeUnitDescription()`` is a ``dict``: ``d.executable = "/bin/date"`` and
``d["executable"] = "/bin/date"`` are the same, it can be built empty and filled in any order, and
a plain dict works wherever one is taken. ``from_dict`` (what ``create_pilot`` and ``submit_*``
call) validates it and returns a new, read-only, normalized copy whose attributes give every key
with its default; changing the dict afterwards changes nothing that was submitted.

Every description type lists its keys once, in ``_FIELDS`` (converter, default, required), with
the BigJob names in ``_ALIASES``; the keys BigJob knew and this project does not use are accepted,
warned about once and dropped (``pilot.description_keys``). ``from_dict`` rejects unknown keys
(naming the closest known one), wrong types and missing required keys with ``PilotError`` before
anything is created.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable, Mapping
from operator import methodcaller
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, TypeVar

from pilot.description_keys import (
    CREDENTIALS,
    EMPTY,
    IGNORED,
    LABELS,
    PLAIN_FORMS,
    Spec,
    as_arguments,
    as_bool,
    as_environment,
    as_extra,
    as_line,
    as_megabytes,
    as_minutes,
    as_output_data,
    as_positive_int,
    as_text,
    as_text_list,
    one_of,
)
from pilot.errors import PilotError

D = TypeVar("D", bound="_Description")

_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_ignored(kind: str, key: str) -> None:
    """One warning per key and process; it names the key, never its value (it may be a secret)."""
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    from pilot.log import get_logger

    get_logger().warning(f"{kind} key {key!r} is a BigJob key this project does not use: ignored", key=key)


class _Description(dict[str, Any]):
    """Shared behaviour: attribute access, ``from_dict``, ``to_dict`` and the key table."""

    __slots__ = ()

    #: key -> how it is validated, its default and whether it is required
    _FIELDS: ClassVar[Mapping[str, Spec]]
    #: BigJob's name -> this project's key (giving both is an error)
    _ALIASES: ClassVar[Mapping[str, str]] = {}
    #: aliases used only when their key is not given (``total_core_count``)
    _FALLBACKS: ClassVar[frozenset[str]] = frozenset()
    # filled in by __init_subclass__
    _BASE: ClassVar[dict[str, Any]]
    _REQUIRED: ClassVar[tuple[str, ...]]
    _KNOWN: ClassVar[list[str]]
    _HINTS: ClassVar[list[str]]
    _PLAIN: ClassVar[dict[str, Callable[[Any], Any]]]
    _VALID: ClassVar[type[_Description]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields = cls.__dict__.get("_FIELDS")
        if fields is None:  # the read-only twin made below
            return
        annotated = set(cls.__annotations__)
        missing = set(fields) - annotated
        assert not missing, f"{cls.__name__}: keys without an annotation: {missing}"
        for name, spec in fields.items():
            setattr(cls, name, property(methodcaller("get", name, spec.default), doc=spec.convert.__doc__))
        # a validated description holds exactly the keys of its to_dict(): the defaults that are
        # not None (in key order), then the keys given
        cls._BASE = {name: spec.default for name, spec in fields.items()
                     if spec.default is not None and spec.default is not EMPTY}
        cls._PLAIN = {name: PLAIN_FORMS[spec.convert] for name, spec in fields.items() if spec.convert in PLAIN_FORMS}
        cls._REQUIRED = tuple(name for name, spec in fields.items() if spec.required)
        cls._KNOWN = sorted({*fields, *cls._ALIASES})
        cls._HINTS = sorted({*fields, *cls._ALIASES, *IGNORED})
        cls._VALID = type(cls.__name__, (_ReadOnly, cls), {
            "__slots__": (), "__module__": cls.__module__, "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__, "_PUBLIC": cls})

    # --- dict with attribute access ------------------------------------------------------------
    if not TYPE_CHECKING:  # so that mypy still flags a misspelt attribute in typed code

        def __getattr__(self, name: str) -> Any:
            """A key that is not one of this type's (a BigJob key, say), read as an attribute."""
            if name.startswith("__"):
                raise AttributeError(name)
            try:
                return self[name]
            except KeyError:
                raise AttributeError(f"{type(self).__name__} has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no key {name!r}") from None

    def __repr__(self) -> str:
        shown = {k: "***" if k in CREDENTIALS else v for k, v in self.items()}
        return f"{type(self).__name__}({shown!r})"

    # --- validation ------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls: type[D], data: Mapping[str, Any] | D) -> D:
        """Validate ``data`` and return a normalized, read-only copy; raise ``PilotError`` on bad
        input. A description this returned is returned as it is."""
        if type(data) is cls._VALID:
            return data  # type: ignore[return-value]
        if not isinstance(data, Mapping):
            raise PilotError(f"a {cls.__name__} must be built from a dict, got {type(data).__name__}")
        fields = cls._FIELDS
        values = cls._BASE.copy()
        for key, value in data.items():
            spec = fields.get(key)
            if spec is None:
                cls._other_key(key, value, data, values)
            elif value is not None:
                value = spec.convert(key, value)
                if value is not None:  # None: an empty mapping, left out as if not given
                    values[key] = value
        for key in cls._REQUIRED:
            if key not in values:
                raise PilotError(f"{cls.__name__} is missing the required key {key!r}", key=key)
        cls._check(values)
        return cls._VALID(values)  # type: ignore[return-value]

    @classmethod
    def _other_key(cls, raw_key: Any, value: Any, data: Mapping[str, Any], values: dict[str, Any]) -> None:
        """A key that is not in ``_FIELDS``: an alias, a BigJob key to ignore, or a mistake."""
        if not isinstance(raw_key, str):
            raise PilotError(f"{cls.__name__} keys must be strings, got {raw_key!r}")
        key = cls._ALIASES.get(raw_key)
        if key is None:
            if raw_key in IGNORED:
                _warn_ignored(cls.__name__, raw_key)
                return
            close = difflib.get_close_matches(raw_key, cls._HINTS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(cls._KNOWN)}"
            raise PilotError(f"unknown {cls.__name__} key {raw_key!r}{hint}", key=raw_key)
        if value is None:
            return
        converted = cls._FIELDS[key].convert(raw_key, value)
        if data.get(key) is not None:
            if raw_key in cls._FALLBACKS:
                return  # the key itself wins
            raise PilotError(f"{cls.__name__} key {key!r} given twice (once as {raw_key!r})", key=raw_key)
        if converted is not None:
            values[key] = converted

    @classmethod
    def _check(cls, values: dict[str, Any]) -> None:
        """Checks across keys, after each key was validated."""

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready dict of the keys that are set, defaults included (empty lists stay,
        empty maps go)."""
        return type(self).from_dict(self).to_dict()


def _read_only(self: Any, *args: Any, **kwargs: Any) -> NoReturn:
    name = type(self).__name__
    raise PilotError(f"this {name} was validated and is read-only; {name}(desc) is an editable copy")


def _rebuild(cls: type[_Description], data: dict[str, Any]) -> _Description:
    return cls.from_dict(data)


class _ReadOnly:
    """What ``from_dict`` returns: a validated description that cannot change."""

    __slots__ = ()
    _PUBLIC: ClassVar[type[_Description]]

    __setitem__ = __delitem__ = __setattr__ = __delattr__ = _read_only
    clear = pop = popitem = setdefault = update = __ior__ = _read_only

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready dict of the keys that are set, defaults included (empty lists stay,
        empty maps go)."""
        out: dict[str, Any] = dict(self)  # type: ignore[call-overload]
        for key, form in self._PUBLIC._PLAIN.items():
            value = out.get(key)
            if value is not None:
                out[key] = form(value)
        return out

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: Any) -> Any:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (self._PUBLIC, self.to_dict())


class PilotComputeDescription(_Description):
    """What a pilot is: where it runs (``service_url``) and how large it is."""

    __slots__ = ()

    service_url: str
    resource: str | None
    number_of_processes: int
    processes_per_node: int | None
    working_directory: str | None
    walltime: float | None
    queue: str | None
    project: str | None
    reservation: str | None
    spmd_variation: str | None
    file_transfer: tuple[str, ...]
    affinity_datacenter_label: str | None
    affinity_machine_label: str | None
    environment: Mapping[str, str]
    extra: Mapping[str, Any]

    _FIELDS: ClassVar[Mapping[str, Spec]] = {
        "service_url": Spec(as_text, ""),
        "resource": Spec(as_text),
        "number_of_processes": Spec(as_positive_int, 1),
        "processes_per_node": Spec(as_positive_int),
        "working_directory": Spec(as_line),
        "walltime": Spec(as_minutes),
        "queue": Spec(as_line),
        "project": Spec(as_line),
        "reservation": Spec(as_line),
        "spmd_variation": Spec(as_text),
        "file_transfer": Spec(as_text_list, ()),
        **LABELS,
        "environment": Spec(as_environment, EMPTY),
        "extra": Spec(as_extra, EMPTY),
    }
    _ALIASES: ClassVar[Mapping[str, str]] = {"wall_time_limit": "walltime", "allocation": "project",
                                             "total_core_count": "number_of_processes"}
    _FALLBACKS: ClassVar[frozenset[str]] = frozenset({"total_core_count"})

    @classmethod
    def _check(cls, values: dict[str, Any]) -> None:
        """``service_url`` is required unless a site ``resource`` is named."""
        if not values["service_url"] and not values.get("resource"):
            raise PilotError("PilotComputeDescription is missing the required key 'service_url'", key="service_url")


class ComputeUnitDescription(_Description):
    """One task: a command line and what it needs."""

    __slots__ = ()

    executable: str
    arguments: tuple[str, ...]
    environment: Mapping[str, str]
    working_directory: str | None
    output: str
    error: str
    input: str | None
    number_of_processes: int
    spmd_variation: str
    input_data: tuple[str, ...]
    output_data: tuple[Mapping[str, tuple[str, ...]], ...]
    file_transfer: tuple[str, ...]
    affinity_datacenter_label: str | None
    affinity_machine_label: str | None
    walltime: float | None
    name: str | None
    restartable: bool

    _FIELDS: ClassVar[Mapping[str, Spec]] = {
        "executable": Spec(as_text, required=True),
        "arguments": Spec(as_arguments, ()),
        "environment": Spec(as_environment, EMPTY),
        "working_directory": Spec(as_line),
        "output": Spec(as_line, "stdout.txt"),
        "error": Spec(as_line, "stderr.txt"),
        "input": Spec(as_line),
        "number_of_processes": Spec(as_positive_int, 1),
        "spmd_variation": Spec(one_of("single", "mpi"), "single"),
        "input_data": Spec(as_text_list, ()),
        "output_data": Spec(as_output_data, ()),
        "file_transfer": Spec(as_text_list, ()),
        **LABELS,
        "walltime": Spec(as_minutes),
        "name": Spec(as_text),
        "restartable": Spec(as_bool, False),
    }
    _ALIASES: ClassVar[Mapping[str, str]] = {"wall_time_limit": "walltime",
                                             "total_core_count": "number_of_processes"}
    _FALLBACKS: ClassVar[frozenset[str]] = frozenset({"total_core_count"})

    @classmethod
    def _check(cls, values: dict[str, Any]) -> None:
        """The executable may not be empty."""
        if not values["executable"].strip():
            raise PilotError("ComputeUnitDescription key 'executable' must not be empty", key="executable")


class PilotDataDescription(_Description):
    """A storage place on a data backend."""

    __slots__ = ()

    service_url: str
    size: float | None
    number_of_replicas: int | None
    affinity_datacenter_label: str | None
    affinity_machine_label: str | None
    extra: Mapping[str, Any]

    _FIELDS: ClassVar[Mapping[str, Spec]] = {
        "service_url": Spec(as_text, required=True),
        "size": Spec(as_megabytes),
        "number_of_replicas": Spec(as_positive_int),
        **LABELS,
        "extra": Spec(as_extra, EMPTY),
    }


class DataUnitDescription(_Description):
    """A set of files stored together."""

    __slots__ = ()

    file_urls: tuple[str, ...]
    number_of_replicas: int | None
    affinity_datacenter_label: str | None
    affinity_machine_label: str | None
    name: str | None

    _FIELDS: ClassVar[Mapping[str, Spec]] = {
        "file_urls": Spec(as_text_list, ()),
        "number_of_replicas": Spec(as_positive_int),
        **LABELS,
        "name": Spec(as_text),
    }
