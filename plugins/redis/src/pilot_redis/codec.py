"""Records as Redis hashes: one field per record field, ``None`` as an absent field.

Strings are stored as they are, booleans as ``1``/``0``, numbers in their Python ``repr``, and
``description``/``hosts``/``input_data`` as JSON (the Lua scripts never parse them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pilot.errors import PilotError
from pilot.states import State
from pilot.store import JSON_FIELDS, PILOT_FIELDS, UNIT_FIELDS, Record

_INT = frozenset({"slots", "exit_code", "attempts", "agent_pid"})
_FLOAT = frozenset({"submitted", "started", "finished", "heartbeat", "heartbeat_timeout", "staging_in", "staging_out"})
_BOOL = frozenset({"claimed", "cancel_requested"})
UNIT_DEFAULTS: Mapping[str, Any] = {"claimed": False, "cancel_requested": False, "attempts": 0, "slots": 1}
PILOT_DEFAULTS: Mapping[str, Any] = {"cancel_requested": False}


def encode_value(key: str, value: Any) -> str:
    """One field value as stored (never ``None``: absent fields mean ``None``)."""
    if key in JSON_FIELDS:
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, State):
        return value.value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return value
    raise PilotError(f"store field {key!r} cannot hold a {type(value).__name__}")


def encode(record: Mapping[str, Any], fields: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(flat [field, value, ...] to set, fields to delete)``; unknown fields raise."""
    pairs: list[str] = []
    deletes: list[str] = []
    for key, value in record.items():
        if key not in fields:
            raise PilotError(f"unknown store field {key!r}")
        if value is None:
            deletes.append(key)
        else:
            pairs += (key, encode_value(key, value))
    return pairs, deletes


def decode_value(key: str, raw: bytes | str) -> Any:
    """One stored field value back as the core wrote it."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    if key in JSON_FIELDS:
        return json.loads(text)
    if key in _BOOL:
        return text == "1"
    if key in _INT:
        try:
            return int(text)
        except ValueError:
            return float(text)
    if key in _FLOAT:
        return float(text)
    return text


def decode(flat: Mapping[bytes, bytes] | Sequence[bytes], fields: Sequence[str],
           defaults: Mapping[str, Any]) -> Record:
    """A full record from ``HGETALL`` (a mapping, or a flat ``[field, value, ...]`` list)."""
    items = flat.items() if isinstance(flat, Mapping) else zip(flat[::2], flat[1::2], strict=True)
    record: Record = dict.fromkeys(fields)
    record.update(defaults)
    for raw_key, raw in items:
        key = raw_key.decode()
        if key in record:
            record[key] = decode_value(key, raw)
    return record


def decode_fields(values: Sequence[bytes | None], fields: Sequence[str], defaults: Mapping[str, Any]) -> Record:
    """A partial record from ``HMGET`` values, in ``fields`` order."""
    return {key: (defaults.get(key) if raw is None else decode_value(key, raw))
            for key, raw in zip(fields, values, strict=True)}


def decode_unit(flat: Mapping[bytes, bytes] | Sequence[bytes]) -> Record:
    """A unit record."""
    return decode(flat, UNIT_FIELDS, UNIT_DEFAULTS)


def decode_pilot(flat: Mapping[bytes, bytes] | Sequence[bytes]) -> Record:
    """A pilot record."""
    return decode(flat, PILOT_FIELDS, PILOT_DEFAULTS)
