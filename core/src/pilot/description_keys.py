"""The value rules of description keys: one converter per kind of value, and BigJob's key lists.

A converter takes ``(key, value)`` and returns the normalized value (immutable: tuples and
read-only mappings; ``None`` for an empty mapping, which counts as not given) or raises
``PilotError`` naming the key. Every string must be UTF-8 text without NUL; ``as_line`` values
(those that end up in a batch script or a path) must hold no control character either. Numbers may be
given as numeric strings, as BigJob's command-line tools passed them.

Error messages show a wrong value's type and a short ``repr``, except where the value may be a
secret (environment values): there only the key and the variable name are named.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
import reprlib
from collections.abc import Callable, Mapping
from numbers import Real
from types import MappingProxyType
from typing import Any

from pilot.errors import PilotError

Converter = Callable[[str, Any], Any]

#: BigJob keys this project does not use: accepted, logged once (the key, never the value), dropped
IGNORED = frozenset({
    "number_executor_threads", "vm_id", "vm_ssh_username", "vm_ssh_keyname", "vm_ssh_keyfile", "vm_type",
    "region", "access_key_id", "secret_access_key", "userkey", "processes_per_host",
})
#: the ignored keys whose values are secrets, or lead to one: never shown, even in a ``repr``
CREDENTIALS = frozenset({"access_key_id", "secret_access_key", "userkey", "vm_ssh_keyfile", "vm_ssh_keyname"})
#: the value of an unset mapping key (``environment``, ``extra``)
EMPTY: Mapping[str, Any] = MappingProxyType({})

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60


@dataclasses.dataclass(frozen=True, slots=True)
class Spec:
    """How one key is validated: its converter, its default (None: unset) and whether it is required."""

    convert: Converter
    default: Any = None
    required: bool = False


def type_error(key: str, want: str, value: Any) -> PilotError:
    return PilotError(f"description key {key!r} must be {want}, got {type(value).__name__} {_SHORT.repr(value)}",
                      key=key)


def _problem(value: str, control: bool) -> str | None:
    """What is wrong with a string that is not all printable (the slow path), or None."""
    if "\x00" in value:
        return "must not hold a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid UTF-8 text (it holds a lone surrogate)"
    found = _CONTROL.search(value) if control else None
    if found:
        return f"must not hold control characters such as newlines (found {found.group()!r} at {found.start()})"
    return None


def _check_text(key: str, value: str, control: bool) -> None:
    problem = _problem(value, control)
    if problem:
        raise PilotError(f"description key {key!r} {problem}", key=key)


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise type_error(key, "a string", value)
    return str(value)  # a str subclass: a plain copy


def as_text(key: str, value: Any) -> str:
    """A string: UTF-8 text without NUL."""
    string: str = value if type(value) is str else _string(key, value)
    if not string.isprintable():
        _check_text(key, string, control=False)
    return string


def as_line(key: str, value: Any) -> str:
    """A string without control characters (it ends up in a batch script or a path)."""
    string: str = value if type(value) is str else _string(key, value)
    if not string.isprintable():
        _check_text(key, string, control=True)
    return string


#: The largest count (processes, replicas) a description may ask for.
MAX_COUNT = 2**31 - 1
#: The largest size in megabytes (about an exabyte).
MAX_MEGABYTES = 2**40


def as_positive_int(key: str, value: Any) -> int:
    """An integer >= 1 (a numeric string such as ``"4"`` is read)."""
    number: int
    if type(value) is int:
        number = value
    elif isinstance(value, str):
        try:
            number = int(value)
        except ValueError:
            raise type_error(key, "an integer", value) from None
    elif isinstance(value, bool):
        raise type_error(key, "an integer", value)
    else:
        try:
            number = operator.index(value)
        except TypeError:
            raise type_error(key, "an integer", value) from None
    if number < 1:
        raise PilotError(f"description key {key!r} must be at least 1, got {number}", key=key)
    if number > MAX_COUNT:  # a store keeps 64-bit integers; no count is sensible beyond this
        raise PilotError(f"description key {key!r} must be at most {MAX_COUNT}, got {number}", key=key)
    return number


def _number(key: str, value: Any, want: str) -> float:
    if type(value) is float or type(value) is int:
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise type_error(key, want, value) from None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise type_error(key, want, value)
    return float(value)


def as_minutes(key: str, value: Any) -> float:
    """A positive, finite number of minutes (a numeric string such as ``"10"`` or ``"0.5"`` is read)."""
    number = _number(key, value, "a number of minutes")
    if not math.isfinite(number) or number <= 0:
        raise PilotError(f"description key {key!r} must be a positive number of minutes, got {_SHORT.repr(value)}",
                         key=key)
    return number


def as_megabytes(key: str, value: Any) -> float:
    """A non-negative, finite number of megabytes (a numeric string such as ``"100"`` is read)."""
    number = _number(key, value, "a non-negative number of megabytes")
    if not math.isfinite(number) or number < 0:
        raise type_error(key, "a non-negative number of megabytes", value)
    if number > MAX_MEGABYTES:  # kept in bytes as a 64-bit integer
        raise PilotError(f"description key {key!r} must be at most {MAX_MEGABYTES} MB, got {value!r}", key=key)
    return number


def as_bool(key: str, value: Any) -> bool:
    """True or false."""
    if not isinstance(value, bool):
        raise type_error(key, "true or false", value)
    return value


def one_of(*choices: str) -> Converter:
    """One of ``choices``."""

    def convert(key: str, value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise PilotError(f"description key {key!r} must be one of {', '.join(choices)}; got {_SHORT.repr(value)}",
                             key=key)
        return str(value)

    convert.__doc__ = f"One of {', '.join(choices)}."
    return convert


def as_text_list(key: str, value: Any) -> tuple[str, ...]:
    """A list of strings."""
    if type(value) is not list and (isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple))):
        raise type_error(key, "a list of strings", value)
    out = []
    for item in value:
        if type(item) is not str:
            if not isinstance(item, str):
                raise type_error(f"{key}[]", "a string", item)
            item = str(item)
        if not item.isprintable():
            _check_text(key, item, control=False)
        out.append(item)
    return tuple(out)


def as_arguments(key: str, value: Any) -> tuple[str, ...]:
    """A list of strings; numbers are accepted and written out, as BigJob users expect."""
    if type(value) is not list and (isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple))):
        raise type_error(key, "a list of strings", value)
    out = []
    for item in value:
        if type(item) is not str:
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise type_error(f"{key}[]", "a string or number", item)
            item = str(item)
        if not item.isprintable():
            _check_text(key, item, control=False)
        out.append(item)
    return tuple(out)


def _env_value(key: str, name: str, value: Any) -> str:
    """``str(value)``, as BigJob did (a unit's value, a number, None...); bytes are decoded."""
    try:
        return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)
    except Exception as exc:  # a failing __str__, or bytes that are not UTF-8: never show the value
        raise PilotError(f"description key {key!r}: the value of {name!r} cannot be made a string "
                         f"({type(exc).__name__})", key=f"{key}[{name!r}]") from None


def as_environment(key: str, value: Any) -> Mapping[str, str] | None:
    """A dict (values of any type are made strings with ``str()``), or a list of ``K=V`` strings."""
    pairs: dict[str, str] = {}
    if type(value) is dict or isinstance(value, Mapping):
        for name, val in value.items():
            if not isinstance(name, str):
                raise type_error(key, "a mapping with string names", name)
            pairs[name] = val if type(val) is str else _env_value(key, name, val)
    elif isinstance(value, (list, tuple)):
        for item in value:
            if not isinstance(item, str) or "=" not in item or item.startswith("="):
                raise type_error(key, "a list of 'NAME=value' strings", item)
            name, _, val = item.partition("=")
            pairs[name] = val
    else:
        raise type_error(key, "a dict or a list of 'NAME=value' strings", value)
    for name, val in pairs.items():
        if not (name.replace("_", "a").isalnum() and not name[0].isdigit()):  # '' is not alnum
            raise PilotError(f"description key {key!r}: {name!r} is not a valid variable name", key=key)
        problem = None if val.isprintable() else _problem(val, control=True)
        if problem:  # name the variable, never the value
            raise PilotError(f"description key {key!r}: the value of {name!r} {problem}", key=f"{key}[{name!r}]")
    return MappingProxyType(pairs) if pairs else None


def _extra_key(key: str, name: Any) -> Any:
    if isinstance(name, str):
        return as_line(key, name)
    if name is None or isinstance(name, bool | int | float):
        return name
    raise PilotError(f"description key {key!r} has a key of type {type(name).__name__}: keys must be text",
                     key=key)


def _copy_extra(key: str, value: Any) -> Any:
    """A deep copy of an ``extra`` value (the user's lists and dicts stay theirs), checking strings."""
    if type(value) is str:
        return as_line(key, value)
    if isinstance(value, Mapping):
        return {_extra_key(key, k): _copy_extra(f"{key}[{k!r}]", v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_extra(key, v) for v in value]
    if isinstance(value, tuple):
        return tuple(_copy_extra(key, v) for v in value)
    if isinstance(value, str):
        return as_line(key, value)
    if value is None or isinstance(value, bool | int | float):
        return value
    raise PilotError(f"description key {key!r} holds a {type(value).__name__}: extra values must be text, "
                     "numbers, booleans, None, lists or dicts (what the coordination store keeps as JSON)",
                     key=key)


def as_extra(key: str, value: Any) -> Mapping[str, Any] | None:
    """A dict with string keys; no control characters in its keys and string values."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise type_error(key, "a dict with string keys", value)
    try:
        copied = {as_line(key, k): _copy_extra(f"{key}[{k!r}]", v) for k, v in value.items()}
    except RecursionError:
        raise PilotError(f"description key {key!r} is nested too deeply", key=key) from None
    return MappingProxyType(copied) if copied else None


def as_output_data(key: str, value: Any) -> tuple[Mapping[str, tuple[str, ...]], ...]:
    """A list of ``{du_url: [glob patterns]}`` dicts."""
    if not isinstance(value, (list, tuple)):
        raise type_error(key, "a list of {du_url: [patterns]} dicts", value)
    out = []
    for item in value:
        if not isinstance(item, Mapping):
            raise type_error(key, "a list of {du_url: [patterns]} dicts", item)
        out.append(MappingProxyType({as_text(key, k): as_text_list(f"{key}[{k!r}]", v) for k, v in item.items()}))
    return tuple(out)


LABELS = {"affinity_datacenter_label": Spec(as_text), "affinity_machine_label": Spec(as_text)}


def plain(value: Any) -> Any:
    """A JSON-ready deep copy: tuples and lists become lists, mappings dicts."""
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


def _plain_output_data(value: tuple[Mapping[str, tuple[str, ...]], ...]) -> list[dict[str, list[str]]]:
    return [{du: list(patterns) for du, patterns in item.items()} for item in value]


#: how ``to_dict`` writes the value of each converter that does not give a scalar
PLAIN_FORMS: dict[Converter, Callable[[Any], Any]] = {
    as_text_list: list, as_arguments: list, as_environment: dict, as_extra: plain,
    as_output_data: _plain_output_data,
}
