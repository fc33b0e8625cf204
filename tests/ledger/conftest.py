"""Ledger contract fixtures: one suite, every backend (memory always; Redis via ``redis_db``;
a private Redis Cluster via ``redis_cluster_db``).

Time is a :class:`FakeClock` the test moves by hand. The memory ledger reads it directly; the
Redis ledger passes it to its scripts through the ``test_clock`` hook instead of ``TIME``, so
a time-based test is exact on both backends and never sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import pytest

from dispatcher.ledger.events import JournalEvent
from dispatcher.ledger.memory import MemoryLedger
from dispatcher.ledger.model import PoolSpec
from dispatcher.ledger.protocol import Ledger
from tests.clock import T0, FakeClock

__all__ = ["T0", "FakeClock"]


CONTRACT_DEADLINE_S = 2.0  # seconds a Redis call may take in contract tests


@dataclass
class Harness:
    ledger: Ledger
    clock: FakeClock
    journal: Callable[[], Awaitable[list[JournalEvent]]]  # every event so far, in order

    async def kinds(self) -> list[str]:
        return [e.kind.value for e in await self.journal()]


MakeLedger = Callable[[Sequence[PoolSpec]], Awaitable[Harness]]


async def _memory(pools: Sequence[PoolSpec], clock: FakeClock) -> tuple[Ledger, Harness]:
    ledger = MemoryLedger(pools, clock=clock)

    async def journal() -> list[JournalEvent]:
        return ledger.journal.unacked()

    return ledger, Harness(ledger, clock, journal)


async def read_redis_journal(url: str) -> list[JournalEvent]:
    """Every event of every journal stream the ledger registered, oldest first."""
    from dispatcher.ledger.redis_codec import RedisKeys, event_from_entry, family_of_stream
    from dispatcher.redis_client import client_from_url

    client = client_from_url(url, timeout_s=5, max_connections=4, decode_responses=True)
    try:
        events = []
        for stream in sorted(await client.smembers(RedisKeys().streams)):
            family = family_of_stream(stream)
            for entry_id, fields in await client.xrange(stream):
                events.append(event_from_entry(family, str(entry_id), dict(fields)))
    finally:
        await client.aclose()
    return sorted(events, key=lambda e: e.at)


async def _redis(url: str, pools: Sequence[PoolSpec], clock: FakeClock) -> tuple[Ledger, Harness]:
    from dispatcher.ledger.redis_backend import RedisLedger

    # The contract is about what is admitted, not how fast: a deadline of the production
    # 250 ms fails 500 concurrent first calls (script load included) on a loaded CI machine.
    # Deadlines have their own tests (test_failover, bench.ledger).
    ledger = await RedisLedger.open(url, pools, test_clock=clock, timeout_s=CONTRACT_DEADLINE_S)

    async def journal() -> list[JournalEvent]:
        return await read_redis_journal(url)

    return ledger, Harness(ledger, clock, journal)


URL_FIXTURES = {"memory": None, "redis": "redis_db", "redis-cluster": "redis_cluster_db"}


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis_cluster),
    ]
)
async def make_ledger(request: pytest.FixtureRequest) -> AsyncIterator[MakeLedger]:
    """``await make_ledger([pool, ...])`` -> a fresh :class:`Harness` on this backend."""
    fixture = URL_FIXTURES[request.param]
    url = str(request.getfixturevalue(fixture)) if fixture else ""
    opened: list[Ledger] = []

    async def make(pools: Sequence[PoolSpec]) -> Harness:
        clock = FakeClock()
        if url:
            ledger, harness = await _redis(url, pools, clock)
        else:
            ledger, harness = await _memory(pools, clock)
        opened.append(ledger)
        return harness

    yield make
    for ledger in opened:
        await ledger.aclose()
