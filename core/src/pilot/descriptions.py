"""Descriptions: built from plain dicts, validated, then frozen.

Every description type lists its keys once, in ``_FIELDS``; ``from_dict`` rejects unknown keys
(naming the closest known one), wrong types and missing required keys with ``PilotError`` before
anything is created.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

from pilot.errors import PilotError

Converter = Callable[[str, Any], Any]
D = TypeVar("D", bound="_Description")


def _type_error(key: str, want: str, value: Any) -> PilotError:
    return PilotError(f"description key {key!r} must be {want}, got {type(value).__name__} {value!r}", key=key)


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _type_error(key, "a string", value)
    return value


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(key, "an integer", value)
    if value < 1:
        raise PilotError(f"description key {key!r} must be at least 1, got {value}", key=key)
    return value


def _minutes(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_error(key, "a number of minutes", value)
    if not math.isfinite(value) or value <= 0:
        raise PilotError(f"description key {key!r} must be a positive number of minutes, got {value}", key=key)
    return float(value)


def _megabytes(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise _type_error(key, "a non-negative number of megabytes", value)
    return float(value)


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _type_error(key, "true or false", value)
    return value


def _str_list(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise _type_error(key, "a list of strings", value)
    for item in value:
        if not isinstance(item, str):
            raise _type_error(f"{key}[]", "a string", item)
    return tuple(value)


def _arguments(key: str, value: Any) -> tuple[str, ...]:
    """A list of strings; numbers are accepted and written out, as BigJob users expect."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise _type_error(key, "a list of strings", value)
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise _type_error(f"{key}[]", "a string or number", item)
        out.append(str(item))
    return tuple(out)


def _environment(key: str, value: Any) -> Mapping[str, str]:
    """A dict of strings, or a list of ``K=V`` strings."""
    pairs: dict[str, str] = {}
    if isinstance(value, Mapping):
        for name, val in value.items():
            if not isinstance(name, str) or not name:
                raise _type_error(key, "a mapping with string names", name)
            if isinstance(val, bool) or not isinstance(val, (str, int, float)):
                raise _type_error(f"{key}[{name!r}]", "a string", val)
            pairs[name] = str(val)
    elif isinstance(value, (list, tuple)):
        for item in value:
            if not isinstance(item, str) or "=" not in item or item.startswith("="):
                raise _type_error(key, "a list of 'NAME=value' strings", item)
            name, _, val = item.partition("=")
            pairs[name] = val
    else:
        raise _type_error(key, "a dict or a list of 'NAME=value' strings", value)
    for name in pairs:
        if not (name.replace("_", "a").isalnum() and not name[0].isdigit()):
            raise PilotError(f"description key {key!r}: {name!r} is not a valid variable name", key=key)
    return MappingProxyType(pairs)


def _extra(key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _type_error(key, "a dict with string keys", value)
    return MappingProxyType(dict(value))


def _output_data(key: str, value: Any) -> tuple[Mapping[str, tuple[str, ...]], ...]:
    if not isinstance(value, (list, tuple)):
        raise _type_error(key, "a list of {du_url: [patterns]} dicts", value)
    out = []
    for item in value:
        if not isinstance(item, Mapping):
            raise _type_error(key, "a list of {du_url: [patterns]} dicts", item)
        out.append(MappingProxyType({_str(key, k): _str_list(f"{key}[{k!r}]", v) for k, v in item.items()}))
    return tuple(out)


def _choice(*choices: str) -> Converter:
    def convert(key: str, value: Any) -> str:
        if value not in choices:
            raise PilotError(f"description key {key!r} must be one of {', '.join(choices)}; got {value!r}", key=key)
        return str(value)

    return convert


@dataclasses.dataclass(frozen=True)
class _Spec:
    convert: Converter
    required: bool = False


class _Description:
    """Shared behaviour: ``from_dict``, ``to_dict`` and the key table."""

    _FIELDS: ClassVar[Mapping[str, _Spec]]
    _ALIASES: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def from_dict(cls: type[D], data: Mapping[str, Any] | D) -> D:
        """Validate ``data`` and build the frozen description; raise ``PilotError`` on bad input."""
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise PilotError(f"a {cls.__name__} must be built from a dict, got {type(data).__name__}")
        values: dict[str, Any] = {}
        for raw_key, value in data.items():
            if not isinstance(raw_key, str):
                raise PilotError(f"{cls.__name__} keys must be strings, got {raw_key!r}")
            key = cls._ALIASES.get(raw_key, raw_key)
            spec = cls._FIELDS.get(key)
            if spec is None:
                known = sorted([*cls._FIELDS, *cls._ALIASES])
                close = difflib.get_close_matches(raw_key, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
                raise PilotError(f"unknown {cls.__name__} key {raw_key!r}{hint}", key=raw_key)
            if key in values:
                raise PilotError(f"{cls.__name__} key {key!r} given twice (once as {raw_key!r})", key=raw_key)
            if value is None and not spec.required:
                continue
            values[key] = spec.convert(key, value)
        for key, spec in cls._FIELDS.items():
            if spec.required and key not in values:
                raise PilotError(f"{cls.__name__} is missing the required key {key!r}", key=key)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready dict of the keys that are set (empty lists stay, empty maps go)."""
        out: dict[str, Any] = {}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if type(value) not in _SCALARS:  # submitting many units walks this: skip the common cases
                if value is None or value is _NO_MAPPING:
                    continue
                value = _plain(value)
                if value == {}:
                    continue
            out[name] = value
        return out


_SCALARS = frozenset({str, int, float, bool})
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
_NO_MAPPING: Mapping[str, Any] = MappingProxyType({})


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(field.name for field in dataclasses.fields(cls))
    return names


def _plain(value: Any) -> Any:
    if type(value) in _SCALARS:
        return value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _empty() -> Mapping[str, Any]:
    return _NO_MAPPING


_LABELS = {"affinity_datacenter_label": _Spec(_str), "affinity_machine_label": _Spec(_str)}


@dataclasses.dataclass(frozen=True)
class PilotComputeDescription(_Description):
    """What a pilot is: where it runs (``service_url``) and how large it is."""

    service_url: str = ""
    resource: str | None = None
    number_of_processes: int = 1
    processes_per_node: int | None = None
    working_directory: str | None = None
    walltime: float | None = None
    queue: str | None = None
    project: str | None = None
    reservation: str | None = None
    spmd_variation: str | None = None
    file_transfer: tuple[str, ...] = ()
    affinity_datacenter_label: str | None = None
    affinity_machine_label: str | None = None
    environment: Mapping[str, str] = dataclasses.field(default_factory=_empty)
    extra: Mapping[str, Any] = dataclasses.field(default_factory=_empty)

    _FIELDS: ClassVar[Mapping[str, _Spec]] = {
        "service_url": _Spec(_str),
        "resource": _Spec(_str),
        "number_of_processes": _Spec(_positive_int),
        "processes_per_node": _Spec(_positive_int),
        "working_directory": _Spec(_str),
        "walltime": _Spec(_minutes),
        "queue": _Spec(_str),
        "project": _Spec(_str),
        "reservation": _Spec(_str),
        "spmd_variation": _Spec(_str),
        "file_transfer": _Spec(_str_list),
        **_LABELS,
        "environment": _Spec(_environment),
        "extra": _Spec(_extra),
    }
    _ALIASES: ClassVar[Mapping[str, str]] = {"wall_time_limit": "walltime"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | PilotComputeDescription) -> PilotComputeDescription:
        """Validate; ``service_url`` is required unless a site ``resource`` is named."""
        desc = super().from_dict(data)
        if not desc.service_url and not desc.resource:
            raise PilotError("PilotComputeDescription is missing the required key 'service_url'", key="service_url")
        return desc


@dataclasses.dataclass(frozen=True)
class ComputeUnitDescription(_Description):
    """One task: a command line and what it needs."""

    executable: str = ""
    arguments: tuple[str, ...] = ()
    environment: Mapping[str, str] = dataclasses.field(default_factory=_empty)
    working_directory: str | None = None
    output: str = "stdout.txt"
    error: str = "stderr.txt"
    input: str | None = None
    number_of_processes: int = 1
    spmd_variation: str = "single"
    input_data: tuple[str, ...] = ()
    output_data: tuple[Mapping[str, tuple[str, ...]], ...] = ()
    file_transfer: tuple[str, ...] = ()
    affinity_datacenter_label: str | None = None
    affinity_machine_label: str | None = None
    walltime: float | None = None
    name: str | None = None
    restartable: bool = False

    _FIELDS: ClassVar[Mapping[str, _Spec]] = {
        "executable": _Spec(_str, required=True),
        "arguments": _Spec(_arguments),
        "environment": _Spec(_environment),
        "working_directory": _Spec(_str),
        "output": _Spec(_str),
        "error": _Spec(_str),
        "input": _Spec(_str),
        "number_of_processes": _Spec(_positive_int),
        "spmd_variation": _Spec(_choice("single", "mpi")),
        "input_data": _Spec(_str_list),
        "output_data": _Spec(_output_data),
        "file_transfer": _Spec(_str_list),
        **_LABELS,
        "walltime": _Spec(_minutes),
        "name": _Spec(_str),
        "restartable": _Spec(_bool),
    }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | ComputeUnitDescription) -> ComputeUnitDescription:
        """Validate; the executable may not be empty."""
        desc = super().from_dict(data)
        if not desc.executable.strip():
            raise PilotError("ComputeUnitDescription key 'executable' must not be empty", key="executable")
        return desc


@dataclasses.dataclass(frozen=True)
class PilotDataDescription(_Description):
    """A storage place on a data backend."""

    service_url: str = ""
    size: float | None = None
    affinity_datacenter_label: str | None = None
    affinity_machine_label: str | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=_empty)

    _FIELDS: ClassVar[Mapping[str, _Spec]] = {
        "service_url": _Spec(_str, required=True),
        "size": _Spec(_megabytes),
        **_LABELS,
        "extra": _Spec(_extra),
    }


@dataclasses.dataclass(frozen=True)
class DataUnitDescription(_Description):
    """A set of files stored together."""

    file_urls: tuple[str, ...] = ()
    affinity_datacenter_label: str | None = None
    affinity_machine_label: str | None = None
    name: str | None = None

    _FIELDS: ClassVar[Mapping[str, _Spec]] = {
        "file_urls": _Spec(_str_list),
        **_LABELS,
        "name": _Spec(_str),
    }
