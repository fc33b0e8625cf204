"""The journal consumer's CPU per event: a backlog of Route + Release events copied into SQL.

    python -m bench.journal_drain [--pairs 10000] [--rounds 3] [--batch 200]
        [--redis-url redis://127.0.0.1:6379/14] [--flush-redis] [--database-url URL]
        [--event-loop auto|uvloop|asyncio] [--pin auto|off] [--json] [--check]

In ``bench.route`` the journal process shares the bench's second CPU with Redis and the load
generator, so every microsecond it spends per event is taken from the Route rate. This bench
measures that cost alone, in this process (the aiosqlite thread's CPU included):

1. the real ``RedisLedger`` journals ``--pairs`` reservations, each reserved then released,
   as Routes and Releases do (two events each), on Redis database 14, which it flushes and
   owns as ``bench.route`` does (``bench.bench_db``);
2. the baseline drains that backlog with the source alone: ``RedisJournalSource`` reads and
   acks it in batches of ``--batch`` through a consumer group of its own, and drops the
   events; what is left of the consumer's cost above it is the SQL half;
3. the real ``JournalConsumer`` drains the same entries through the durable ledger's group
   into ``--database-url`` (default: a fresh SQLite file per round, as ``bench.route`` and
   the embedded default use; a PostgreSQL URL must be migrated already).

Each is the backlogged shape (every read fills its batch); ``--batch`` sets the read's size
(a live consumer lingering 50 ms at ~2,000 events/s reads ~100). The rounds alternate the two
so machine noise hits both alike.

Printed: ``consumer_cpu_us_per_event`` (the consumer, read to commit to ack),
``source_cpu_us_per_event`` (read and ack alone) and their difference
``sql_cpu_us_per_event``, ``consumer_over_source``, ``events_per_s`` (the consumer's, by
wall clock), each one's ``_best`` round (on a shared VM noise only adds CPU time: the best
round is the steadiest figure to compare two versions with) and ``events``. A round whose
consumer or source drained other than the two events per pair journalled, or (on the fresh
SQLite file) whose SQL holds other than what the consumer drained, is a problem:
``--check`` exits 1 on one, never on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import func, select

from bench import bench_db
from bench.output import finish
from bench.route import pinning
from bench.route_handlers import positive
from dispatcher import event_loop
from dispatcher.backends import connect_database, connect_redis
from dispatcher.ledger import Candidate, PoolSpec, Reservation, ReserveRequest, TokenEstimate
from dispatcher.ledger.redis_backend import RedisLedger
from dispatcher.ledger.sql.consumer import JournalConsumer
from dispatcher.ledger.sql.engine import DurableLedger
from dispatcher.ledger.sql.models import JournalEventRow
from dispatcher.ledger.sql.redis_source import GROUP, RedisJournalSource
from dispatcher.runtime import ensure_schema

POOLS = (
    PoolSpec(id="drain/pool-a", family="drain", tpm=1e12, rpm=1e9, safety_factor=1.0),
    PoolSpec(id="drain/pool-b", family="drain", tpm=1e12, rpm=1e9, safety_factor=1.0),
)
FILLERS = 64  # concurrent reservers: the ledger batches them as it batches Routes
SOURCE_GROUP = "bench-source-only"
CONNECT_TIMEOUT_S = 5.0


@dataclass
class Drained:
    cpu_s: float
    wall_s: float
    events: int

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_s / self.events * 1e6 if self.events else 0.0


async def fill(url: str, pairs: int, round_no: int) -> None:
    """``pairs`` reservations, each reserved then released, journalled by the real ledger."""
    ledger = await RedisLedger.open(url, POOLS, timeout_s=5.0)
    candidates = tuple(
        Candidate(f"cluster-{i}", (p.id,), TokenEstimate(100, 100)) for i, p in enumerate(POOLS)
    )
    ids = iter(range(pairs))

    async def filler() -> None:
        for n in ids:
            request = ReserveRequest(f"drain-{round_no}-{n}", candidates, lease_s=60.0)
            reservation = await ledger.reserve(request)
            if not isinstance(reservation, Reservation):
                raise RuntimeError(f"{request.request_id} denied: {reservation}")
            await ledger.release(reservation.reservation_id)

    try:
        await asyncio.gather(*(filler() for _ in range(FILLERS)))
    finally:
        await ledger.aclose()


async def make_groups(url: str) -> None:
    client = await connect_redis(url, CONNECT_TIMEOUT_S)
    try:
        for group in (SOURCE_GROUP, GROUP):
            await RedisJournalSource(client, group=group).pending()  # creates its groups
    finally:
        await client.aclose()


async def drain_source(url: str, batch: int) -> Drained:
    """Read and ack every entry through a group of the bench's own; drop the events."""
    client = await connect_redis(url, CONNECT_TIMEOUT_S)
    source = RedisJournalSource(client, group=SOURCE_GROUP)
    try:
        return await timed(lambda: source_step(source, batch))
    finally:
        await client.aclose()


async def source_step(source: RedisJournalSource, batch: int) -> int:
    events = await source.read(batch, block_ms=1)
    if events:
        await source.ack([e.event_id for e in events])
    return len(events)


async def drain_consumer(url: str, database_url: str, batch: int) -> tuple[Drained, int]:
    """The real consumer into ``database_url``; also the events stored there."""
    client = await connect_redis(url, CONNECT_TIMEOUT_S)
    engine = await connect_database(database_url, CONNECT_TIMEOUT_S)
    # block_ms=1: an empty read means drained; do not wait for more.
    consumer = JournalConsumer(
        RedisJournalSource(client), DurableLedger(engine), batch=batch, block_ms=1
    )
    try:
        drained = await timed(consumer.step)
        async with engine.connect() as conn:
            stored = await conn.execute(select(func.count()).select_from(JournalEventRow))
        return drained, int(stored.scalar_one())
    finally:
        await engine.dispose()
        await client.aclose()


async def timed(step: Callable[[], Awaitable[int]]) -> Drained:
    """Run ``step`` until it handles nothing: the backlog's CPU and wall time."""
    cpu, wall, events = time.process_time(), time.perf_counter(), 0
    while n := await step():
        events += n
    return Drained(time.process_time() - cpu, time.perf_counter() - wall, events)


def flush(url: str, force: bool) -> None:
    client = redis.Redis.from_url(url)
    try:
        bench_db.claim(client, url, force=force)
    finally:
        client.close()


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    sources: list[Drained] = []
    consumers: list[Drained] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp:
        for n in range(args.rounds):
            flush(args.redis_url, force=args.flush_redis or n > 0)
            database_url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / f'r{n}.db'}"
            await ensure_schema(database_url)
            await fill(args.redis_url, args.pairs, n)
            # Both groups before either drains: an ack trims what every group has acked.
            await make_groups(args.redis_url)
            sources.append(await drain_source(args.redis_url, args.batch))
            drained, rows = await drain_consumer(args.redis_url, database_url, args.batch)
            consumers.append(drained)
            if args.database_url is None and rows != drained.events:
                problems.append(f"round {n}: {drained.events} events drained, {rows} stored")
            expected = 2 * args.pairs  # reserved, then released
            if drained.events != expected or sources[-1].events != expected:
                problems.append(
                    f"round {n}: {expected} events journalled, the consumer drained "
                    f"{drained.events}, the source alone {sources[-1].events}"
                )
    return summary(args, sources, consumers, problems)


def summary(
    args: argparse.Namespace,
    sources: Sequence[Drained],
    consumers: Sequence[Drained],
    problems: list[str],
) -> dict[str, Any]:
    def per_event(rounds: Sequence[Drained]) -> float:
        return sum(r.cpu_s for r in rounds) / max(1, sum(r.events for r in rounds)) * 1e6

    consumer, source = per_event(consumers), per_event(sources)
    consumer_best = min(r.cpu_us_per_event for r in consumers)
    source_best = min(r.cpu_us_per_event for r in sources)
    wall = sum(r.wall_s for r in consumers)
    return {
        "consumer_cpu_us_per_event": round(consumer, 1),
        "consumer_cpu_us_per_event_best": round(consumer_best, 1),
        "source_cpu_us_per_event": round(source, 1),
        "source_cpu_us_per_event_best": round(source_best, 1),
        "sql_cpu_us_per_event": round(consumer - source, 1),
        "sql_cpu_us_per_event_best": round(consumer_best - source_best, 1),
        "consumer_over_source": round(consumer / source, 2) if source else None,
        "events_per_s": round(sum(r.events for r in consumers) / wall, 1) if wall else 0.0,
        "events": sum(r.events for r in consumers),
        "settings": {
            "pairs": args.pairs,
            "rounds": args.rounds,
            "batch": args.batch,
            "database": "sqlite (fresh per round)" if args.database_url is None else "given",
            "event_loop": event_loop.loop_name(),
            "pinned": args.pinned,
        },
        "problems_seen": problems,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.journal_drain", description=__doc__)
    parser.add_argument("--pairs", type=positive, default=10_000)
    parser.add_argument("--rounds", type=positive, default=3)
    parser.add_argument("--batch", type=positive, default=200)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    bench_db.add_flush_flag(parser)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--event-loop", choices=event_loop.CHOICES, default="auto")
    parser.add_argument("--pin", choices=("auto", "off"), default="auto")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--check", action="store_true", help="exit 1 on lost or extra events")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    pins = pinning(args.pin)
    args.pinned = pins is not None
    if pins is not None:
        os.sched_setaffinity(0, pins.others)  # where bench.route runs the journal process
    result = event_loop.run(measure(args), args.event_loop)
    problems = result.pop("problems_seen")
    return finish(result, problems, as_json=args.json, check=args.check)


if __name__ == "__main__":
    raise SystemExit(main())
