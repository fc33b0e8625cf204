"""The Lua scripts mirror ``bucket.py``: the same random call sequence, on the same fake
clock, gives the same decisions, errors and pool snapshots on both backends."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import hypothesis.strategies as st
import pytest
import redis
from hypothesis import HealthCheck, given, settings

from dispatcher.errors import DispatcherError
from dispatcher.ledger.memory import MemoryLedger
from dispatcher.ledger.model import Denial, Mode, Observation, Reservation, Usage
from dispatcher.ledger.protocol import Ledger
from dispatcher.ledger.redis_backend import RedisLedger
from tests.ledger.conftest import FakeClock, read_redis_journal
from tests.ledger.helpers import cand, req, spec

pytestmark = pytest.mark.redis

POOLS = [
    spec("a", tpm=1000, rpm=10, burst=30),
    spec("b", tpm=600, mode=Mode.FIXED_MINUTE, refund_unused=False),
    spec("c", tpd=5000, output_weight=3, safety_factor=0.9),
]
NAMES = ("a", "b", "c")

ops = st.one_of(
    st.tuples(
        st.just("reserve"),
        st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True),
        st.integers(0, 1200),
        st.integers(0, 300),
        st.sampled_from([5.0, 30.0, 90.0]),
    ),
    st.tuples(st.sampled_from(["dispatch", "release", "get"]), st.integers(0, 30)),
    st.tuples(st.just("settle"), st.integers(0, 30), st.integers(0, 1500), st.integers(0, 300)),
    st.tuples(st.just("usage"), st.integers(0, 30), st.integers(0, 500)),
    st.tuples(st.just("tick"), st.sampled_from([0.5, 7.0, 29.0, 61.0])),
    st.tuples(st.just("expire")),
    st.tuples(
        st.just("reconcile"),
        st.sampled_from(NAMES),
        st.sampled_from([None, -1, 0, 150, 900]),
        st.sampled_from([None, -1, 300, 2000]),
        st.sampled_from([None, 10.0]),
        st.integers(-5, 0),
    ),
    st.tuples(st.just("limits"), st.sampled_from(NAMES), st.sampled_from([None, 400, 3000])),
)


async def apply(ledger: Ledger, ids: list[str], clock: FakeClock, op: tuple[Any, ...]) -> Any:
    kind = op[0]
    index = op[1] if len(op) > 1 and isinstance(op[1], int) else None
    pick = ids[index % len(ids)] if ids and index is not None else "fam#" + "0" * 32
    if kind == "reserve":
        cands = [cand(f"c-{p}", p, tokens=op[2], out=op[3]) for p in op[1]]
        return await ledger.reserve(req(f"r{len(ids)}-{op[2]}", *cands, lease=op[4]))
    if kind == "dispatch":
        return await ledger.ack_dispatched(pick)
    if kind == "release":
        return await ledger.release(pick)
    if kind == "get":
        return await ledger.get(pick)
    if kind == "settle":
        return await ledger.settle(pick, Usage(1, op[2], op[3]), "ok")
    if kind == "usage":
        return await ledger.report_usage(pick, Usage(1, op[2], 0))
    if kind == "expire":
        return await ledger.expire_due()
    if kind == "reconcile":
        o = Observation(clock.now + op[5], remaining_tokens=op[2], limit_tokens=op[3])
        if op[4] is not None:
            o = dataclasses.replace(o, rate_limited=True, retry_after_s=op[4])
        return await ledger.reconcile(op[1], o)
    if kind == "limits":
        return await ledger.set_limits(op[1], {"tpm": op[2]})
    raise AssertionError(kind)


def normal(result: Any) -> Any:
    """What the contract promises about a result, as plain data."""
    if isinstance(result, Reservation):
        cost = {p: c.as_tuple() for p, c in result.cost.items()}
        return (result.reservation_id, result.candidate_index, result.state, cost, result.replayed)
    if isinstance(result, Denial):
        return ("deny", result.retry_after, dict(result.reasons), result.never_fits)
    if isinstance(result, DispatcherError):
        return type(result)
    return result if isinstance(result, bool | list) else None


def same(a: Any, b: Any) -> bool:
    """Equal, with float tolerance (Lua and Python round the same sums alike, nearly)."""
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return abs(a - b) <= 1e-6 + 1e-9 * abs(b)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


async def run_both(url: str, sequence: list[tuple[Any, ...]]) -> None:
    clock = FakeClock()
    memory = MemoryLedger(POOLS, clock=clock)
    remote = await RedisLedger.open(url, POOLS, test_clock=clock)
    ids: list[str] = []
    try:
        for op in sequence:
            if op[0] == "tick":
                clock.advance(op[1])
                continue
            outcomes = []
            for ledger in (memory, remote):
                try:
                    outcomes.append(await apply(ledger, ids, clock, op))
                except DispatcherError as exc:
                    outcomes.append(exc)
            assert same(normal(outcomes[1]), normal(outcomes[0])), (op, *outcomes)
            if isinstance(outcomes[0], Reservation) and not outcomes[0].replayed:
                ids.append(outcomes[0].reservation_id)
            for pid in NAMES:
                mine, theirs = await memory.snapshot(pid), await remote.snapshot(pid)
                assert same(theirs.blocked_until, mine.blocked_until), (op, pid)
                assert same(
                    {d: dataclasses.astuple(v) for d, v in theirs.dims.items()},
                    {d: dataclasses.astuple(v) for d, v in mine.dims.items()},
                ), (op, pid, theirs, mine)
        remote_events = await read_redis_journal(url)
        memory_events = memory.journal.unacked()
        assert [e.kind for e in remote_events] == [e.kind for e in memory_events]
        for a, b in zip(remote_events, memory_events, strict=True):
            assert (a.reservation_id, a.pool_ids) == (b.reservation_id, b.pool_ids)
            assert same(a.at, b.at)
            assert same(json.loads(json.dumps(a.data)), json.loads(json.dumps(b.data))), (a, b)
    finally:
        await remote.aclose()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sequence=st.lists(ops, min_size=1, max_size=30))
def test_redis_scripts_decide_like_the_memory_ledger(
    redis_db: str, sequence: list[tuple[Any, ...]]
) -> None:
    with redis.Redis.from_url(redis_db) as client:
        client.flushdb()
    asyncio.run(run_both(redis_db, sequence))
