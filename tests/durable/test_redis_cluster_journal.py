"""The journal on a real Redis Cluster: families in different slots (on different nodes) are
read slot by slot, copied into a SQLite durable ledger exactly once, acked and trimmed per
stream (DESIGN §7.4, §7.5)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster
from sqlalchemy import select

from dispatcher.ledger.events import JournalEvent
from dispatcher.ledger.model import Reservation, Usage
from dispatcher.ledger.redis_backend import RedisLedger
from dispatcher.ledger.redis_codec import RedisKeys
from dispatcher.ledger.sql import migrate
from dispatcher.ledger.sql.consumer import JournalConsumer
from dispatcher.ledger.sql.engine import EVENTS, DurableLedger, open_engine
from dispatcher.ledger.sql.redis_source import RedisJournalSource
from dispatcher.redis_client import client_from_url
from tests.durable.conftest import sqlite_url
from tests.ledger.conftest import read_redis_journal
from tests.ledger.helpers import one, spec
from tests.redis_cluster import SPREAD_FAMILIES

pytestmark = pytest.mark.redis_cluster

POOLS = [spec(f"pool-{f}", f, tpm=100_000) for f in SPREAD_FAMILIES]


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


@pytest.fixture
async def cluster(redis_cluster_db: str) -> AsyncIterator[RedisCluster]:
    client = client_from_url(redis_cluster_db, timeout_s=5, max_connections=8)
    assert isinstance(client, RedisCluster)
    try:
        yield await client.initialize()  # so the slot map is known before any command
    finally:
        await client.aclose()


@pytest.fixture
async def durable(tmp_path: Path) -> AsyncIterator[DurableLedger]:
    url = sqlite_url(tmp_path / "ledger.db")
    await migrate.upgrade(url)
    ledger = DurableLedger(open_engine(url))
    try:
        yield ledger
    finally:
        await ledger.aclose()


def _source(client: RedisCluster, consumer: str = "pod-1") -> RedisJournalSource:
    return RedisJournalSource(client, consumer=consumer, refresh_s=0, trim_every_s=0)


async def _journal_every_family(url: str) -> None:
    """Settle, release and abandon-to-be reservations in every family."""
    ledger = await RedisLedger.open(url, POOLS)
    try:
        for family in SPREAD_FAMILIES:
            made = [await ledger.reserve(one(f"r{i}", f"pool-{family}")) for i in range(3)]
            assert all(isinstance(r, Reservation) for r in made), made
            settled, released, _ = (r.reservation_id for r in made if isinstance(r, Reservation))
            await ledger.ack_dispatched(settled)
            await ledger.settle(settled, Usage(1, 40, 10), "ok")
            await ledger.release(released)
    finally:
        await ledger.aclose()


async def _stored_ids(durable: DurableLedger) -> list[str]:
    async with durable.engine.connect() as conn:
        return list((await conn.execute(select(EVENTS.c.event_id))).scalars())


async def test_every_familys_events_reach_sqlite_exactly_once_across_a_crash(
    redis_cluster_db: str, cluster: RedisCluster, durable: DurableLedger
) -> None:
    await _journal_every_family(redis_cluster_db)
    streams = [RedisKeys().journal(f) for f in SPREAD_FAMILIES]
    assert len({cluster.get_node_from_key(s).name for s in streams}) == 3
    expected = sorted(e.event_id for e in await read_redis_journal(redis_cluster_db))
    assert len(expected) == len(SPREAD_FAMILIES) * 6  # 3 reserved, dispatched, settled, released

    dying = JournalConsumer(DiesBeforeAck(_source(cluster)), durable, block_ms=10)
    with pytest.raises(Killed):
        await dying.step()
    restarted = JournalConsumer(_source(cluster), durable, block_ms=10)
    while await restarted.step():  # replays its pending entries, slot by slot, then new ones
        pass

    assert sorted(await _stored_ids(durable)) == expected
    assert (await restarted.lag()).duplicates == len(expected)
    assert await restarted.source.pending() == 0
    assert [await cluster.xlen(s) for s in streams] == [0] * len(streams)  # trimmed per stream


async def test_an_idle_read_across_slots_returns_after_a_poll_not_the_whole_block(
    redis_cluster_db: str, cluster: RedisCluster
) -> None:
    await _journal_every_family(redis_cluster_db)
    assert len(await _source(cluster, "pod-1").read(1000, 0)) == len(SPREAD_FAMILIES) * 6
    idle = _source(cluster, "pod-2")  # nothing left for it: pod-1 holds every entry
    started = asyncio.get_running_loop().time()
    assert await idle.read(1000, 10_000) == []
    assert asyncio.get_running_loop().time() - started < 2.0
