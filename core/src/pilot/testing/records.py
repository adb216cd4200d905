"""Unit and pilot records as the core writes them, for store tests (``unit_record``,
``pilot_record``: defaults overridden by keyword)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pilot.states import State


def unit_record(unit_id: str, **fields: Any) -> dict[str, Any]:
    """A new queued unit record as the core writes it; ``fields`` override the defaults."""
    record: dict[str, Any] = {
        "id": unit_id, "cds_id": "cds-1", "pilot_id": None, "state": State.Pending, "slots": 1,
        "description": {"executable": "/bin/echo", "arguments": [unit_id]}, "datacenter": None,
        "machine": None, "submitted": 1000.0, "input_data": None,
    }
    record.update(fields)
    return record


def pilot_record(pilot_id: str, **fields: Any) -> dict[str, Any]:
    """A new pilot record as the core writes it; ``fields`` override the defaults."""
    record: dict[str, Any] = {
        "id": pilot_id, "service_id": "pcs-1", "state": State.New,
        "description": {"service_url": "fork://localhost", "number_of_processes": 2},
        "sandbox": f"/work/sandbox/{pilot_id}", "scheme": "fork", "slots": 2, "datacenter": "dc",
        "machine": "m1", "heartbeat_timeout": 60.0,
    }
    record.update(fields)
    return record


def record_ids(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ids of records, in order."""
    return [str(r["id"]) for r in records]
