"""What only the Redis backend has: server time, key layout, script reload, batching,
outages, and many OS processes sharing one pool."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis

from dispatcher.errors import BackendUnavailable
from dispatcher.ledger.model import Denial, Reservation, ReservationState
from dispatcher.ledger.redis_backend import RedisLedger
from tests.ledger.conftest import read_redis_journal
from tests.ledger.helpers import one, spec
from tests.ledger.proxy import Proxy
from tests.redis_tls import TlsRedis

pytestmark = pytest.mark.redis


@pytest.fixture
async def raw(redis_db: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_db, decode_responses=True)
    yield client
    await client.aclose()


async def test_leases_expire_by_server_time(redis_db: str) -> None:
    """No test clock: the script reads TIME. Poll with a bounded deadline, never a fixed sleep."""
    ledger = await RedisLedger.open(redis_db, [spec(tpd=1000)])
    try:
        res = await ledger.reserve(one("r", tokens=500, lease=0.05))
        assert isinstance(res, Reservation)
        deadline = time.monotonic() + 5
        expired: list[str] = []
        while not expired and time.monotonic() < deadline:
            expired = await ledger.expire_due()
            await asyncio.sleep(0.01)
        assert expired == [res.reservation_id]
        assert (await ledger.get(res.reservation_id)).state is ReservationState.ABANDONED
        assert (await ledger.snapshot("p1")).dims["tpd"].remaining == pytest.approx(1000)
    finally:
        await ledger.aclose()


async def test_keys_are_hash_tagged_by_family(redis_db: str, raw: aioredis.Redis) -> None:
    ledger = await RedisLedger.open(redis_db, [spec("p1", "azure/gpt-4o", tpm=1000)])
    try:
        res = await ledger.reserve(one("r"))
        assert isinstance(res, Reservation)
    finally:
        await ledger.aclose()
    assert set(await raw.keys("*")) == {
        "dsp:{azure/gpt-4o}:pool:p1",
        f"dsp:{{azure/gpt-4o}}:res:{res.reservation_id}",
        "dsp:{azure/gpt-4o}:leases",
        "dsp:{azure/gpt-4o}:journal",
        "dsp:journal:streams",
    }
    # The family's stream, and the one for events of no pool (breaker trips, handovers).
    assert await raw.smembers("dsp:journal:streams") == {
        "dsp:{azure/gpt-4o}:journal",
        "dsp:{events}:journal",
    }
    (event,) = await read_redis_journal(redis_db)
    assert event.event_id.startswith("azure/gpt-4o/")
    assert event.reservation_id == res.reservation_id


async def test_scripts_reload_after_script_flush(redis_db: str, raw: aioredis.Redis) -> None:
    ledger = await RedisLedger.open(redis_db, [spec(tpm=1000)])
    try:
        assert isinstance(await ledger.reserve(one("a")), Reservation)
        await raw.script_flush()
        assert isinstance(await ledger.reserve(one("b")), Reservation)
    finally:
        await ledger.aclose()


async def test_lost_pool_is_seeded_again(redis_db: str, raw: aioredis.Redis) -> None:
    ledger = await RedisLedger.open(redis_db, [spec(tpm=1000)])
    try:
        await raw.delete("dsp:{fam}:pool:p1")
        assert isinstance(await ledger.reserve(one("a")), Reservation)
    finally:
        await ledger.aclose()


async def test_limits_set_at_runtime_survive_a_restart(redis_db: str) -> None:
    ledger = await RedisLedger.open(redis_db, [spec(tpm=1000)])
    await ledger.set_limits("p1", {"tpm": 500})
    await ledger.aclose()
    ledger = await RedisLedger.open(redis_db, [spec(tpm=1000)])
    try:
        assert (await ledger.snapshot("p1")).dims["tpm"].limit == 500
    finally:
        await ledger.aclose()


async def test_the_ledger_runs_over_tls(redis_tls: TlsRedis) -> None:
    """rediss://: script calls on the pipelined connection, the rest on redis-py's pool,
    both through the same verified TLS."""
    ledger = await RedisLedger.open(redis_tls.url, [spec(tpm=1_000_000)])
    try:
        reservations = await asyncio.gather(*(ledger.reserve(one(f"tls{i}")) for i in range(20)))
        assert all(isinstance(r, Reservation) for r in reservations)
        first = reservations[0]
        assert isinstance(first, Reservation)
        assert (await ledger.release(first.reservation_id)).state is ReservationState.RELEASED
        assert (await ledger.get(first.reservation_id)).state is ReservationState.RELEASED
    finally:
        await ledger.aclose()
        async with aioredis.Redis.from_url(redis_tls.url) as client:
            await client.flushdb()


async def test_concurrent_reserves_share_script_calls(redis_db: str) -> None:
    ledger = await RedisLedger.open(redis_db, [spec(tpm=1_000_000)])
    run_script = ledger._run_script
    batches: list[int] = []

    async def counting(name: str, keys: Sequence[str], args: Sequence[str], deadline: float) -> Any:
        if name == "reserve":
            batches.append(len(json.loads(args[1])["reqs"]))
        return await run_script(name, keys, args, deadline)

    ledger._run_script = counting  # type: ignore[method-assign]
    try:
        results = await asyncio.gather(*(ledger.reserve(one(f"r{i}")) for i in range(200)))
        assert all(isinstance(r, Reservation) for r in results)
        assert sum(batches) == 200
        assert len(batches) <= 10, batches
    finally:
        await ledger.aclose()


async def test_a_lost_pool_is_restored_before_its_batch_writes_anything(
    redis_db: str, raw: aioredis.Redis
) -> None:
    """Reserve reads a pool only when a candidate needs it, but checks every pool of the
    batch first: had the first request of this batch been written before the script found
    the second one's pool gone, the retry after reseeding would answer it as a replay."""
    pools = [spec("p1", tpm=1000), spec("p2", tpm=1000)]
    # One batch on the wire at a time: the first call goes alone, the other two share one.
    ledger = await RedisLedger.open(redis_db, pools, max_inflight=1)
    try:
        await raw.delete("dsp:{fam}:pool:p2")
        results = await asyncio.gather(
            ledger.reserve(one("alone", "p1")),
            ledger.reserve(one("batched-on-p1", "p1")),
            ledger.reserve(one("batched-on-p2", "p2")),
        )
        assert all(isinstance(r, Reservation) and not r.replayed for r in results), results
        assert (await ledger.snapshot("p1")).dims["tpm"].remaining == pytest.approx(800, abs=5)
        assert (await ledger.snapshot("p2")).dims["tpm"].remaining == pytest.approx(900, abs=5)
    finally:
        await ledger.aclose()


async def test_unreachable_redis_is_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailable):
        await RedisLedger.open("redis://127.0.0.1:1/0", [spec(tpm=1000)], timeout_s=0.2)


async def test_redis_going_away_mid_run_is_backend_unavailable(redis_db: str) -> None:
    proxy = await Proxy(redis_db).start()
    ledger = await RedisLedger.open(proxy.url, [spec(tpm=1000)])
    try:
        assert isinstance(await ledger.reserve(one("before")), Reservation)
        await proxy.cut()
        with pytest.raises(BackendUnavailable):
            await ledger.reserve(one("after"))
        with pytest.raises(BackendUnavailable):
            await ledger.snapshot("p1")
    finally:
        await ledger.aclose()


# -- many processes, one pool ---------------------------------------------------------------------

CAPACITY = 9000.0  # tpd 10,000 x 0.9; refill ~0.1 token/s, so the pool barely refills in a run


def _process(url: str, seed: int, callers: int) -> list[float]:
    """One replica: ``callers`` coroutines each reserving once; returns admitted costs."""

    async def main() -> list[float]:
        pools = [spec(tpd=10_000, safety_factor=0.9)]
        ledger = await RedisLedger.open(url, pools, timeout_s=5.0)
        rng = random.Random(seed)
        costs = [float(rng.randint(50, 150)) for _ in range(callers)]
        try:
            results = await asyncio.gather(
                *(ledger.reserve(one(f"p{seed}-{i}", tokens=c)) for i, c in enumerate(costs))
            )
        finally:
            await ledger.aclose()
        assert not any(isinstance(r, Denial) and r.never_fits for r in results)
        return [c for c, r in zip(costs, results, strict=True) if isinstance(r, Reservation)]

    return asyncio.run(main())


def test_four_processes_never_over_admit(redis_db: str) -> None:
    started = time.time()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        per_process = pool.starmap(_process, [(redis_db, seed, 200) for seed in range(4)])
    elapsed = time.time() - started
    admitted = [c for costs in per_process for c in costs]
    refill = CAPACITY / 86400 * elapsed
    assert sum(admitted) <= CAPACITY + refill
    assert sum(admitted) >= 0.9 * CAPACITY  # and the pool is actually used
    reserved = [e for e in asyncio.run(read_redis_journal(redis_db)) if e.kind == "reserved"]
    assert len(reserved) == len(admitted)
