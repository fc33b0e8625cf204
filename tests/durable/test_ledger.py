"""DurableLedger on PostgreSQL and SQLite: idempotent writes, the reservation projection,
admin reads, persisted settings, and unreachable databases as BackendUnavailable."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from dispatcher.errors import BackendUnavailable, NotFound
from dispatcher.ledger.events import EventKind, JournalEvent
from dispatcher.ledger.sql.engine import EVENTS, RESERVATIONS, DurableLedger, open_engine
from dispatcher.ledger.sql.projection import summarise
from tests.durable.conftest import closed_port, lifecycle

T0 = 1_790_000_000.25


async def _count(ledger: DurableLedger, table: object = EVENTS) -> int:
    async with ledger.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


async def test_the_same_batch_twice_is_stored_once(ledger: DurableLedger) -> None:
    batch = lifecycle("r1", T0) + lifecycle("r2", T0)
    assert await ledger.write_events(batch) == 8
    assert await ledger.write_events(batch) == 0
    assert await _count(ledger) == 8
    assert await _count(ledger, RESERVATIONS) == 2


async def test_a_duplicate_inside_one_batch_counts_once(ledger: DurableLedger) -> None:
    event = lifecycle("r1", T0)[0]
    assert await ledger.write_events([event, event]) == 1


async def test_batches_larger_than_one_statement_are_written_whole(ledger: DurableLedger) -> None:
    batch = [e for i in range(700) for e in lifecycle(f"r{i}", T0 + i, i)]
    assert await ledger.write_events(batch) == 2800
    assert await _count(ledger, RESERVATIONS) == 700
    assert (await ledger.reservation("r699")).state == "settled"


async def test_the_reservation_row_follows_its_events(ledger: DurableLedger) -> None:
    reserved, dispatched, usage, settled = lifecycle("r1", T0, 7)
    await ledger.write_events([reserved])
    row = await ledger.reservation("r1")
    assert (row.state, row.request_id, row.candidate_id) == ("reserved", "req-7", "eu-1")
    assert row.pool_ids == ("azure-openai/eastus2/gpt-4o",)
    assert row.reserved == {"azure-openai/eastus2/gpt-4o": {"requests": 1, "tokens": 1200}}
    await ledger.write_events([dispatched, usage])
    row = await ledger.reservation("r1")
    assert (row.state, row.usage) == ("in_flight", {"tokens": 300})
    await ledger.write_events([settled])
    row = await ledger.reservation("r1")
    assert (row.state, row.outcome, row.usage) == ("settled", "ok", {"tokens": 900})
    assert row.created_at == datetime.fromtimestamp(T0, UTC)
    assert row.updated_at == datetime.fromtimestamp(T0 + 3, UTC)


async def test_a_late_older_event_never_moves_a_reservation_back(ledger: DurableLedger) -> None:
    """A reclaimed RESERVED committed after the SETTLED fills fields but keeps the state."""
    reserved, _, usage, settled = lifecycle("r1", T0)
    await ledger.write_events([settled])
    await ledger.write_events([usage, reserved])
    row = await ledger.reservation("r1")
    assert (row.state, row.request_id, row.usage) == ("settled", "req-0", {"tokens": 900})
    assert row.created_at == datetime.fromtimestamp(T0, UTC)


async def test_a_redelivered_event_is_not_folded_again(ledger: DurableLedger) -> None:
    reserved, dispatched, _, settled = lifecycle("r1", T0)
    await ledger.write_events([reserved, dispatched, settled])
    await ledger.write_events([reserved, dispatched])
    assert (await ledger.reservation("r1")).state == "settled"


async def test_any_commit_order_of_a_lifecycle_ends_in_the_same_row(
    ledger: DurableLedger,
) -> None:
    """Reclaimed entries can commit in any order; each order must reach the in-order row."""
    expected = summarise("r", lifecycle("r", T0, 1))
    for n, order in enumerate(itertools.permutations(range(4))):
        events = lifecycle(f"r{n}", T0, 1)
        for i in order:
            await ledger.write_events([events[i]])
        assert dataclasses.replace(await ledger.reservation(f"r{n}"), id="r") == expected, order


async def test_journal_only_kinds_leave_reservations_alone(ledger: DurableLedger) -> None:
    handover = JournalEvent("t/h", EventKind.HANDOVER, T0, "r9", (), {"from": "a", "to": "b"})
    breaker = JournalEvent("t/b", EventKind.BREAKER, T0 + 1, None, (), {"to": "open"})
    assert await ledger.write_events([handover, breaker]) == 2
    with pytest.raises(NotFound):
        await ledger.reservation("r9")


async def test_recent_events_round_trip_newest_first(ledger: DurableLedger) -> None:
    batch = lifecycle("r1", T0)
    await ledger.write_events(batch)
    assert await ledger.recent_events(limit=2) == [batch[3], batch[2]]
    assert await ledger.recent_events(EventKind.RESERVED) == [batch[0]]


async def test_concurrent_writers_of_one_reservation_agree(ledger: DurableLedger) -> None:
    """Two consumers committing the two halves of 200 lifecycles at once: no lost update."""
    lives = [lifecycle(f"r{i}", T0 + i, i) for i in range(200)]
    first = [e for life in lives for e in life[:2]]
    second = [e for life in lives for e in life[2:]]
    for _ in range(20):  # SQLite serialises writers: busy waits may surface as retries
        try:
            await asyncio.gather(ledger.write_events(second), ledger.write_events(first))
            break
        except BackendUnavailable:
            continue
    rows = [await ledger.reservation(f"r{i}") for i in range(200)]
    assert {(r.state, r.request_id is not None) for r in rows} == {("settled", True)}


async def test_operator_settings_persist(ledger: DurableLedger) -> None:
    await ledger.set_pool_limits("azure/eastus2/gpt-4o", {"tpm": 450_000}, updated_by="ops")
    await ledger.set_pool_limits("azure/eastus2/gpt-4o", {"tpm": 300_000}, updated_by="amy")
    stored = (await ledger.pool_limits())["azure/eastus2/gpt-4o"]
    assert (stored.limits, stored.updated_by) == ({"tpm": 300_000}, "amy")
    await ledger.set_route_weights("chat", {"llama3-local": 90, "gpt-4o": 10})
    await ledger.set_route_weights("chat", {"llama3-local": 50, "claude": 50})
    assert await ledger.route_weights() == {"chat": {"llama3-local": 50.0, "claude": 50.0}}
    await ledger.set_breaker_settings("auditor", {"failure_rate": 0.05})
    await ledger.set_breaker_settings("auditor", {"failure_rate": 0.1})
    assert await ledger.breaker_settings() == {"auditor": {"failure_rate": 0.1}}


async def test_an_unreachable_postgres_is_backend_unavailable() -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/test"
    ledger = DurableLedger(open_engine(url, connect_timeout=1.0))
    try:
        with pytest.raises(BackendUnavailable) as raised:
            await ledger.write_events(lifecycle("r1", T0))
        assert raised.value.backend == "sql"
        with pytest.raises(BackendUnavailable):
            await ledger.recent_events()
    finally:
        await ledger.aclose()
