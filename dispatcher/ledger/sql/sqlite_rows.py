"""The journal's two SQLite statements, run through the driver without SQLAlchemy's per-row work.

SQLAlchemy runs an executemany on SQLite by building and processing one parameter dict per
row (``construct_params``, then the DateTime and JSON bind processors of every value): about
a quarter of the SQL write's CPU (75-89 against 54-69 us per Route + Release's events, in
batches of 120, the write path alone). Here each row becomes one positional tuple in a
single pass, its values stored exactly as SQLAlchemy stores them — DateTime in the SQLite
dialect's storage format, JSON through :func:`json_text`, the serializer the engine is
opened with — so everything reading through SQLAlchemy (admin reads, ``dispatchctl``) and
the dashboard views sees the same values either way; ``tests/durable/test_sqlite_rows.py``
compares the two row for row.

Both take their rows from ``projection.event_values`` / ``reservation_values`` (the rows the
PostgreSQL path binds too) and encode each value by its column's type.

- events: one multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING event_id`` per chunk,
  as SQLAlchemy's "insertmanyvalues" sends it: the ids it returns are the new events.
- reservations: the upsert SQLAlchemy compiles from ``projection.merge_clause`` (compiled
  once, so the merge rule has one definition), as one executemany of tuples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import JSON, Column, DateTime, Table
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from dispatcher.ledger.events import JournalEvent
from dispatcher.ledger.sql.projection import (
    Reservation,
    event_values,
    merge_clause,
    reservation_values,
)

Encode = Callable[[Any], Any]


def json_text(value: Any) -> str:
    """JSON columns through orjson: the consumer writes every event's data and every
    reservation's costs, and json.dumps was about 5 % of its CPU in a py-spy profile."""
    return orjson.dumps(value).decode()


def stored_time(value: datetime) -> str:
    """A UTC datetime as the SQLite dialect stores a DateTime: no zone, microseconds always
    written (``YYYY-MM-DD HH:MM:SS.ffffff``)."""
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _encoder(column: Column[Any]) -> Encode | None:
    """How SQLAlchemy's bind processor would store a value of ``column`` (None: as is)."""
    if isinstance(column.type, DateTime):
        return lambda v: None if v is None else stored_time(v)
    if isinstance(column.type, JSON):
        # None is SQL NULL, as in the columns that may hold none (``none_as_null``); the
        # one that does not, an event's data, is always a dict.
        return lambda v: None if v is None else json_text(v)
    return None


class _Rows:
    """Row dicts of one table as positional tuples, in the table's column order."""

    def __init__(self, table: Table) -> None:
        self.names = tuple(c.name for c in table.c)
        self._encoders = tuple(_encoder(c) for c in table.c)

    def encode(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(
            row[name] if encode is None else encode(row[name])
            for name, encode in zip(self.names, self._encoders, strict=True)
        )


class EventsInsert:
    """The events insert as driver SQL, and the events as its parameters."""

    def __init__(self, table: Table) -> None:
        self._table = table.name
        self._rows = _Rows(table)

    def sql(self, rows: int) -> str:
        """The insert of ``rows`` events: the ids it returns are the new ones. (Built per
        batch: a few microseconds, where the batch's rows take milliseconds.)"""
        one = "(" + ", ".join("?" * len(self._rows.names)) + ")"
        return (
            f"INSERT INTO {self._table} ({', '.join(self._rows.names)}) VALUES "
            + ", ".join([one] * rows)
            + " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
        )

    def params(self, events: Sequence[JournalEvent]) -> tuple[Any, ...]:
        """The flat parameters of ``sql(len(events))``."""
        return tuple(v for e in events for v in self._rows.encode(event_values(e)))


class ReservationUpsert:
    """The reservations upsert as driver SQL, and the summaries as its rows."""

    def __init__(self, table: Table) -> None:
        self._rows = _Rows(table)
        insert = sqlite.insert(table)
        statement = insert.on_conflict_do_update(
            index_elements=["id"], set_=merge_clause(table, insert.excluded)
        )
        columns = self._rows.names
        compiled = statement.compile(dialect=sqlite.dialect(), column_keys=list(columns))
        self.sql = compiled.string
        names = tuple(compiled.positiontup or ())
        # Each placeholder is a row's column or a constant of the merge rule (the state
        # ranks of its CASEs): the row's come first, in column order, then the constants.
        if names[: len(columns)] != columns:
            raise AssertionError(f"unexpected parameter order: {names}")
        self._constants = tuple(compiled.params[n] for n in names[len(columns) :])

    def params(self, summaries: Sequence[Reservation]) -> list[tuple[Any, ...]]:
        return [self._rows.encode(reservation_values(r)) + self._constants for r in summaries]


class SqliteJournal:
    """The journal's writes on SQLite: both statements, run on the caller's transaction."""

    def __init__(self, events: Table, reservations: Table) -> None:
        self.events = EventsInsert(events)
        self.reservations = ReservationUpsert(reservations)

    async def insert_events(
        self, conn: AsyncConnection, events: Sequence[JournalEvent]
    ) -> list[str]:
        """Insert ``events`` (at most ``CHUNK`` of the engine); the ids that were new."""
        sql, params = self.events.sql(len(events)), self.events.params(events)
        return list((await conn.exec_driver_sql(sql, params)).scalars())

    async def upsert_reservations(
        self, conn: AsyncConnection, summaries: Sequence[Reservation]
    ) -> None:
        if summaries:  # one executemany: the driver binds each row to one prepared statement
            await conn.exec_driver_sql(self.reservations.sql, self.reservations.params(summaries))
