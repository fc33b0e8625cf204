"""The journal consumer end to end: Redis stream -> PostgreSQL, exactly once (DESIGN §7.4).

Each test journals real entries with XADD, runs consumers against the private PostgreSQL
database, and checks every event is in SQL once and nothing is left unacked in Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
import redis.asyncio as aioredis
from sqlalchemy import select

from dispatcher.errors import BackendUnavailable
from dispatcher.ledger.events import EventKind, JournalEvent
from dispatcher.ledger.journal import MemoryJournal
from dispatcher.ledger.sql.consumer import Backoff, EventSink, JournalConsumer
from dispatcher.ledger.sql.engine import EVENTS, DurableLedger, open_engine
from dispatcher.ledger.sql.redis_source import GROUP, RedisJournalSource, stream_key
from tests.durable.conftest import Names, closed_port, eventually, lifecycle

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

T0 = 1_790_000_000.0
FAST = Backoff(base_s=0.005, cap_s=0.05)


class Killed(BaseException):
    """The process dies here (not an error the consumer could handle)."""


class DiesBeforeAck:
    """A source whose process is killed after the SQL commit, before XACK."""

    def __init__(self, inner: RedisJournalSource) -> None:
        self.inner = inner

    async def read(self, batch: int, block_ms: int) -> list[JournalEvent]:
        return await self.inner.read(batch, block_ms)

    async def ack(self, event_ids: Sequence[str]) -> None:
        raise Killed

    async def pending(self) -> int:
        return await self.inner.pending()

    def backlogged(self) -> bool:
        return self.inner.backlogged()


class SwitchableSink:
    """Writes through ``target``; tests swap an unreachable ledger for the real one."""

    def __init__(self, target: EventSink) -> None:
        self.target = target

    async def write_events(self, events: Sequence[JournalEvent]) -> int:
        return await self.target.write_events(events)


async def _journal_many(client: aioredis.Redis, names: Names, n: int, start: int = 0) -> list[str]:
    ids: list[str] = []
    for i in range(start, start + n):
        family = names.family(f"fam{i % 3}")
        ids += await names.journal(client, family, lifecycle(f"r{i}", T0 + i, i))
    return ids


async def _stored_ids(ledger: DurableLedger) -> list[str]:
    async with ledger.engine.connect() as conn:
        return list((await conn.execute(select(EVENTS.c.event_id))).scalars())


async def _unacked(client: aioredis.Redis, names: Names) -> int:
    total = 0
    for family in ("fam0", "fam1", "fam2"):
        total += (await client.xpending(stream_key(names.family(family)), GROUP))["pending"]
    return total


async def _all_settled(ledger: DurableLedger, n: int) -> None:
    states = {(await ledger.reservation(f"r{i}")).state for i in range(n)}
    assert states == {"settled"}


async def test_a_crash_between_commit_and_ack_redelivers_without_duplicates(
    redis_client: aioredis.Redis, pg_ledger: DurableLedger, names: Names
) -> None:
    ids = await _journal_many(redis_client, names, 30)
    dying = JournalConsumer(DiesBeforeAck(names.source(redis_client, "pod-1")), pg_ledger)
    with pytest.raises(Killed):
        await dying.step()
    assert sorted(await _stored_ids(pg_ledger)) == sorted(ids)
    assert await _unacked(redis_client, names) == len(ids)

    restarted = JournalConsumer(names.source(redis_client, "pod-1"), pg_ledger, block_ms=10)
    assert await restarted.step() == len(ids)
    assert sorted(await _stored_ids(pg_ledger)) == sorted(ids)
    assert (await restarted.lag()).duplicates == len(ids)
    assert await _unacked(redis_client, names) == 0
    await _all_settled(pg_ledger, 30)


async def test_a_second_consumer_takes_over_a_dead_consumers_entries(
    redis_client: aioredis.Redis, pg_ledger: DurableLedger, names: Names
) -> None:
    ids = await _journal_many(redis_client, names, 30)
    await names.source(redis_client, "pod-dead").read(1000, 0)  # delivered, then the pod dies
    heir = JournalConsumer(
        names.source(redis_client, "pod-heir", claim_idle_ms=100), pg_ledger, block_ms=10
    )

    async def drained() -> bool:
        await heir.step()
        return await _unacked(redis_client, names) == 0 and len(
            await _stored_ids(pg_ledger)
        ) == len(ids)

    await eventually(drained, what="takeover of the dead consumer's entries")
    assert sorted(await _stored_ids(pg_ledger)) == sorted(ids)
    await _all_settled(pg_ledger, 30)


async def test_postgres_down_loses_nothing_and_delivers_after_recovery(
    redis_client: aioredis.Redis, pg_ledger: DurableLedger, names: Names
) -> None:
    down = DurableLedger(
        open_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/x", connect_timeout=1)
    )
    sink = SwitchableSink(down)
    source = names.source(redis_client, "pod-1")
    consumer = JournalConsumer(source, sink, batch=50, block_ms=10, backoff=FAST)
    ids = await _journal_many(redis_client, names, 20)
    task = asyncio.create_task(consumer.run())
    try:

        async def retried() -> bool:
            return (await consumer.lag()).retries >= 3

        await eventually(retried, what="the consumer to hit the outage")
        ids += await _journal_many(
            redis_client, names, 20, start=20
        )  # journalled during the outage
        assert await _stored_ids(pg_ledger) == []
        assert await source.pending() == len(ids)
        assert (await consumer.lag()).last_error is not None

        sink.target = pg_ledger

        async def caught_up() -> bool:
            return await source.pending() == 0

        await eventually(caught_up, what="delivery after recovery")
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 5)
        await down.aclose()
    assert sorted(await _stored_ids(pg_ledger)) == sorted(ids)
    assert await redis_client.xlen(stream_key(names.family("fam0"))) == 0  # trimmed once acked
    lag = await consumer.lag()
    assert (lag.committed, lag.pending, lag.last_error) == (len(ids), 0, None)
    await _all_settled(pg_ledger, 40)


async def test_cancelling_the_consumer_leaves_the_batch_in_hand_unacked(
    redis_client: aioredis.Redis, names: Names
) -> None:
    ids = await _journal_many(redis_client, names, 5)
    blocked = asyncio.Event()

    class Hangs:
        async def write_events(self, events: Sequence[JournalEvent]) -> int:
            blocked.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    consumer = JournalConsumer(names.source(redis_client, "pod-1"), Hangs(), block_ms=10)
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(blocked.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _unacked(redis_client, names) == len(ids)


async def test_stop_interrupts_a_backoff_at_once() -> None:
    journal_ = MemoryJournal()
    journal_.append(lifecycle("r1", T0)[0].kind, T0, "r1")

    class Down:
        async def write_events(self, events: Sequence[JournalEvent]) -> int:
            raise BackendUnavailable("sql", "down")

    consumer = JournalConsumer(journal_, Down(), backoff=Backoff(base_s=60, cap_s=60))
    task = asyncio.create_task(consumer.run())

    async def retrying() -> bool:
        return (await consumer.lag()).retries >= 1

    await eventually(retrying, what="first failure")
    consumer.stop()
    await asyncio.wait_for(task, 2)
    assert await journal_.pending() == 1


async def test_a_consumer_behind_never_lingers_and_a_trickle_does() -> None:
    """A backlog drains batch after batch (each smaller than ``batch``, as reads split
    across streams are) while the source says it is backlogged; the rest waits."""
    journal_ = MemoryJournal()
    for i in range(1000):
        journal_.append(EventKind.RESERVED, T0, f"r{i}")

    class Counting:
        def __init__(self) -> None:
            self.sizes: list[int] = []

        async def write_events(self, events: Sequence[JournalEvent]) -> int:
            self.sizes.append(len(events))
            if sum(self.sizes) == 1003:
                consumer.stop()
            return len(events)

    class SplitAcrossTwoStreams:
        """Reads return half a batch, as RedisJournalSource's do with two streams."""

        async def read(self, batch: int, block_ms: int) -> list[JournalEvent]:
            return await journal_.read(batch // 2, block_ms)

        async def ack(self, event_ids: Sequence[str]) -> None:
            await journal_.ack(event_ids)

        async def pending(self) -> int:
            return await journal_.pending()

        def backlogged(self) -> bool:
            return journal_.backlogged()

    sink = Counting()
    consumer = JournalConsumer(SplitAcrossTwoStreams(), sink, batch=200)
    lingered: list[int] = []

    async def linger() -> None:
        lingered.append(sum(sink.sizes))
        if len(lingered) == 1:
            journal_.append(EventKind.RESERVED, T0, "late")  # what arrives while it waits

    consumer._linger = linger  # type: ignore[method-assign]
    for i in range(2):
        journal_.append(EventKind.RESERVED, T0, f"trickle-{i}")
    await asyncio.wait_for(consumer.run(), 10)
    # The backlog and the trickle: 1002 events in 100s, the last read holding all that was
    # left (so no backlog, and a linger), then "late".
    assert sink.sizes == [100] * 10 + [2, 1]
    assert lingered[0] == 1002  # no pause before: the first is after the two-event trickle
