"""The journal's driver-level SQLite writes store exactly what SQLAlchemy would store."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, insert
from sqlalchemy.dialects import sqlite

from dispatcher.ledger.events import EventKind, JournalEvent
from dispatcher.ledger.sql import migrate
from dispatcher.ledger.sql.engine import EVENTS, RESERVATIONS, DurableLedger, open_engine
from dispatcher.ledger.sql.projection import event_values, reservation_values, summarise
from dispatcher.ledger.sql.sqlite_rows import stored_time
from tests.durable.conftest import lifecycle, sqlite_url

T0 = 1_790_000_000.25


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 12, 3, 15, 4, 5, 123456, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),  # microsecond 0: still written
        datetime(999, 2, 3, 4, 5, 6, 7, tzinfo=UTC),  # a short year is zero-padded
    ],
)
def test_times_are_stored_in_the_dialects_format(moment: datetime) -> None:
    dialect = sqlite.dialect()
    process = RESERVATIONS.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    assert stored_time(moment) == process(moment)


def _events() -> list[JournalEvent]:
    released = JournalEvent(
        "t/r2/2",
        EventKind.RELEASED,
        T0 + 0.000001,
        "r2",
        ("pool-a", "pool-b"),
        {"refunded": {"pool-a": {"requests": 1.0, "tokens": 2.5}}},
    )
    breaker = JournalEvent("t/b/1", EventKind.BREAKER, T0 + 7, None, (), {"to": "open"})
    reserved = JournalEvent(
        "t/r2/1", EventKind.RESERVED, T0, "r2", ("pool-a", "pool-b"), {"spilled_from": None}
    )
    return [*lifecycle("r1", T0), reserved, released, breaker]


async def _through_sqlalchemy(url: str, events: Sequence[JournalEvent]) -> None:
    """The rows as SQLAlchemy's own executemany writes them, for comparison."""
    by_id: dict[str, list[JournalEvent]] = {}
    for e in events:
        if e.reservation_id:
            by_id.setdefault(e.reservation_id, []).append(e)
    engine = open_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(EVENTS), [event_values(e) for e in events])
            summaries = [reservation_values(summarise(i, es)) for i, es in by_id.items()]
            await conn.execute(insert(RESERVATIONS), summaries)
    finally:
        await engine.dispose()


def _stored(path: Path, table: Table) -> list[tuple[Any, ...]]:
    """Every row as SQLite holds it: the text and types on disk, not SQLAlchemy's reading."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(f"SELECT * FROM {table.name} ORDER BY 1")
        return [tuple((value, type(value).__name__) for value in row) for row in rows]


async def test_rows_match_what_sqlalchemy_stores(tmp_path: Path) -> None:
    fast, reference = tmp_path / "fast.db", tmp_path / "reference.db"
    for path in (fast, reference):
        await migrate.upgrade(sqlite_url(path))
    ledger = DurableLedger(open_engine(sqlite_url(fast)))
    try:
        assert await ledger.write_events(_events()) == len(_events())
    finally:
        await ledger.aclose()
    await _through_sqlalchemy(sqlite_url(reference), _events())
    for table in (EVENTS, RESERVATIONS):
        assert _stored(fast, table) == _stored(reference, table), table.name
    # And they read back through SQLAlchemy as the events that went in.
    ledger = DurableLedger(open_engine(sqlite_url(fast)))
    try:
        newest = await ledger.recent_events(limit=100)
        assert sorted(newest, key=lambda e: e.event_id) == sorted(
            _events(), key=lambda e: e.event_id
        )
        assert (await ledger.reservation("r2")).created_at == datetime.fromtimestamp(T0, UTC)
        assert (await ledger.reservation("r2")).updated_at - datetime.fromtimestamp(
            T0, UTC
        ) == timedelta(microseconds=1)
    finally:
        await ledger.aclose()
