"""The statements behind ``SQLiteStore.update_units``: the states units had before a batch,
one conditional UPDATE per unit, or one ``UPDATE ... FROM (VALUES ...)`` per shape of change."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from pilot.states import State
from pilot.store import UnitUpdate


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _conditions(expect: tuple[str, ...] | None, pilot_id: str | None) -> tuple[str, list[Any]]:
    # unary +: look rows up by id only (see bind_units)
    sql, args = "", list[Any]()
    if expect is not None:
        sql += f" AND +units.state IN ({_marks(expect)})"
        args += expect
    if pilot_id is not None:
        sql += " AND +units.pilot_id = ?"
        args.append(pilot_id)
    return sql, args


def states_of(con: sqlite3.Connection, ids: Sequence[str]) -> dict[str, str]:
    """The state of each of ``ids`` that exists."""
    found: dict[str, str] = {}
    for start in range(0, len(ids), 500):
        chunk = tuple(ids[start:start + 500])
        found.update(con.execute(f"SELECT id, state FROM units WHERE id IN ({_marks(chunk)})", chunk).fetchall())
    return found


def expected_states(update: UnitUpdate) -> tuple[str, ...] | None:
    """The states an update may leave, as stored (None: any)."""
    return None if update.expect is None else tuple(State(s).value for s in update.expect)


def update_one(con: sqlite3.Connection, update: UnitUpdate, row: dict[str, Any]) -> bool:
    """Apply one encoded update; whether it applied."""
    where, args = _conditions(expected_states(update), update.pilot_id)
    sql = f"UPDATE units SET {', '.join(f'{k} = ?' for k in row)} WHERE units.id = ?{where}"
    return bool(con.execute(sql, [*row.values(), update.id, *args]).rowcount)


def update_many(con: sqlite3.Connection, columns: tuple[str, ...], expect: tuple[str, ...] | None,
                 pilot_id: str | None, members: Sequence[tuple[UnitUpdate, dict[str, Any]]]) -> list[str]:
    """Apply updates of one shape in one statement; the ids where they applied."""
    where, args = _conditions(expect, pilot_id)
    values = ", ".join([f"({_marks(('id', *columns))})"] * len(members))
    sql = (f"WITH v(id, {', '.join(columns)}) AS (VALUES {values}) "
           f"UPDATE units SET {', '.join(f'{k} = v.{k}' for k in columns)} FROM v"
           f" WHERE units.id = v.id{where} RETURNING units.id")
    flat: list[Any] = []
    for update, row in members:
        flat += (update.id, *row.values())
    return [found[0] for found in con.execute(sql, [*flat, *args]).fetchall()]
