"""Random sequences of ledger calls on the memory backend keep the §7 invariants.

Checked after every step: reserved (held) per pool equals the sum of open reservations' costs
and is never negative, no bucket holds more than its capacity, and an admission never takes a
bucket below zero (only usage beyond a reservation may: debt). At teardown, after the clock
passes every lease and the sweep runs, every reservation is in a terminal state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dispatcher.errors import FailedPrecondition
from dispatcher.ledger import bucket
from dispatcher.ledger.memory import MemoryLedger
from dispatcher.ledger.model import Mode, Reservation, ReservationState, Usage
from tests.ledger.conftest import FakeClock
from tests.ledger.helpers import cand, req, spec

T = TypeVar("T")
POOLS = ("a", "b", "c")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Drive a memory-ledger coroutine: it never awaits, so one send() finishes it."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("memory ledger awaited something")


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.ledger = MemoryLedger(
            [
                spec("a", tpm=1000, rpm=20),
                spec("b", tpm=600, mode=Mode.FIXED_MINUTE, refund_unused=False),
                spec("c", tpd=5000, output_weight=3, safety_factor=0.9),
            ],
            clock=self.clock,
        )
        self.ids: list[str] = []
        self.seq = 0

    def pools(self) -> dict[str, bucket.PoolState]:
        return self.ledger._pools

    @rule(
        choice=st.lists(st.sampled_from(POOLS), min_size=1, max_size=3, unique=True),
        tokens=st.integers(0, 1200),
        out=st.integers(0, 300),
        lease=st.floats(1, 120),
    )
    def reserve(self, choice: list[str], tokens: int, out: int, lease: float) -> None:
        self.seq += 1
        before = {p: {d: s.level for d, s in self.pools()[p].dims.items()} for p in POOLS}
        cands = [cand(f"c-{p}", p, tokens=tokens, out=out) for p in choice]
        result = run(self.ledger.reserve(req(f"r{self.seq}", *cands, lease=lease)))
        if isinstance(result, Reservation):
            self.ids.append(result.reservation_id)
            for pid in result.pool_ids:
                for dim, state in self.pools()[pid].dims.items():
                    # Admission only ever spends what was there (refill included).
                    assert state.level >= -1e-6, (pid, dim, before[pid][dim], state.level)

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def dispatch(self, data: st.DataObject) -> None:
        self._maybe(self.ledger.ack_dispatched, data)

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self._maybe(self.ledger.release, data)

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), tokens=st.integers(0, 2000), out=st.integers(0, 500))
    def settle(self, data: st.DataObject, tokens: int, out: int) -> None:
        rid = data.draw(st.sampled_from(self.ids))
        try:
            run(self.ledger.settle(rid, Usage(1, tokens, out), "ok"))
        except FailedPrecondition:
            assert run(self.ledger.get(rid)).state is ReservationState.RELEASED

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), tokens=st.integers(0, 500))
    def usage(self, data: st.DataObject, tokens: int) -> None:
        rid = data.draw(st.sampled_from(self.ids))
        try:
            run(self.ledger.report_usage(rid, Usage(1, tokens, 0)))
        except FailedPrecondition:
            assert run(self.ledger.get(rid)).state in (
                ReservationState.SETTLED,
                ReservationState.RELEASED,
            )

    @rule(seconds=st.floats(0, 90))
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def sweep(self) -> None:
        run(self.ledger.expire_due())

    def _maybe(self, op: Any, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(self.ids))
        # Wrong state for this call: refused, nothing changed (the invariants check that).
        with contextlib.suppress(FailedPrecondition):
            run(op(rid))

    @invariant()
    def held_matches_open_reservations(self) -> None:
        expected: dict[tuple[str, str], float] = {}
        for rid in self.ids:
            res = run(self.ledger.get(rid))
            if res.state.open:
                for pid in res.pool_ids:
                    for dim in self.pools()[pid].dims:
                        key = (pid, dim)
                        expected[key] = expected.get(key, 0.0) + res.cost[pid].for_dim(dim)
        for pid, pool in self.pools().items():
            for dim, state in pool.dims.items():
                assert state.held >= 0
                assert abs(state.held - expected.get((pid, dim), 0.0)) < 1e-6

    @invariant()
    def no_bucket_above_capacity(self) -> None:
        for pool in self.pools().values():
            for dim, state in pool.dims.items():
                assert state.level <= bucket.max_level(pool, dim) + 1e-6

    def teardown(self) -> None:
        self.clock.advance(121)
        run(self.ledger.expire_due(limit=10_000))
        states = {run(self.ledger.get(rid)).state for rid in self.ids}
        assert not any(s.open for s in states), states


LedgerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestLedgerMachine = LedgerMachine.TestCase
