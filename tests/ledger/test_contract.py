"""The ledger contract (DESIGN §7), run on every backend through ``make_ledger``."""

from __future__ import annotations

import asyncio
import math
import random

import pytest

from dispatcher.errors import FailedPrecondition, InvalidArgument, NotFound
from dispatcher.ledger.events import EventKind
from dispatcher.ledger.model import (
    Denial,
    Mode,
    Observation,
    Reservation,
    ReservationState,
    TokenEstimate,
    Usage,
)
from tests.ledger.conftest import MakeLedger
from tests.ledger.helpers import cand, one, req, spec

S = ReservationState


def admitted(result: Reservation | Denial) -> Reservation:
    assert isinstance(result, Reservation), result
    return result


def denied(result: Reservation | Denial) -> Denial:
    assert isinstance(result, Denial), result
    return result


# -- admission ---------------------------------------------------------------------------------


async def test_admits_up_to_capacity_then_denies_until_refilled(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec(tpm=1000, safety_factor=0.9)])  # capacity 900, 15 tokens/s
    for i in range(9):
        admitted(await h.ledger.reserve(one(f"r{i}")))
    denial = denied(await h.ledger.reserve(one("r9")))
    assert denial.retry_after == pytest.approx(100 / 15)
    assert denial.reasons == {"c1": "pool p1: tpm exhausted"}
    assert not denial.never_fits
    h.clock.advance(100 / 15 + 1e-6)
    admitted(await h.ledger.reserve(one("r9")))


async def test_concurrent_reserves_never_over_admit(make_ledger: MakeLedger) -> None:
    """500 coroutines against a 9,000-token pool: admitted cost <= capacity, and nearly full."""
    h = await make_ledger([spec(tpm=10_000, safety_factor=0.9)])
    rng = random.Random(7)
    costs = [rng.randint(50, 150) for _ in range(500)]
    results = await asyncio.gather(
        *(h.ledger.reserve(one(f"r{i}", tokens=c)) for i, c in enumerate(costs))
    )
    taken = [c for c, r in zip(costs, results, strict=True) if isinstance(r, Reservation)]
    assert sum(taken) <= 9000
    assert sum(taken) > 9000 - 150  # every refused one did not fit what was left
    snap = await h.ledger.snapshot("p1")
    assert snap.dims["tpm"].reserved == pytest.approx(sum(taken))
    assert (await h.kinds()).count("reserved") == len(taken)


async def test_full_pool_spills_over_to_next_candidate(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec("a", tpm=1000), spec("b", tpm=1000)])
    admitted(await h.ledger.reserve(one("fill", "a", tokens=1000)))
    res = admitted(
        await h.ledger.reserve(
            req("r", cand("east", "a", tokens=500), cand("west", "b", tokens=500))
        )
    )
    assert (res.candidate_index, res.candidate_id, res.spilled_from) == (1, "west", "east")
    assert res.pool_ids == ("b",)
    assert res.cost["b"].tokens == 500


async def test_first_candidate_that_fits_wins_without_spill(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec("a", tpm=1000), spec("b", tpm=1000)])
    res = admitted(await h.ledger.reserve(req("r", cand("east", "a"), cand("west", "b"))))
    assert (res.candidate_index, res.spilled_from) == (0, None)


async def test_candidate_with_several_pools_needs_room_in_all(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec("a", tpm=1000), spec("b", tpm=1000)])
    admitted(await h.ledger.reserve(one("fill", "b", tokens=950)))
    denial = denied(await h.ledger.reserve(req("r", cand("x", "a", "b", tokens=100))))
    assert "pool b: tpm exhausted" in denial.reasons["x"]
    assert (await h.ledger.snapshot("a")).dims["tpm"].remaining == 1000  # nothing half-taken


async def test_denial_retry_after_is_the_earliest_candidate(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec("a", tpm=600), spec("b", tpm=1200)])  # 10 and 20 tokens/s
    admitted(await h.ledger.reserve(one("fa", "a", tokens=600)))
    admitted(await h.ledger.reserve(one("fb", "b", tokens=1200)))
    denial = denied(await h.ledger.reserve(req("r", cand("x", "a"), cand("y", "b"))))
    assert denial.retry_after == pytest.approx(5.0)
    assert set(denial.reasons) == {"x", "y"}
    assert isinstance(denial.to_error().retry_after, float)  # type: ignore[union-attr]


async def test_cost_larger_than_pool_never_fits(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec("a", tpm=1000, safety_factor=0.9), spec("b", tpm=1000)])
    denial = denied(await h.ledger.reserve(one("r", "a", tokens=950)))
    assert denial.never_fits
    assert denial.retry_after is None
    assert "never_fits tpm" in denial.reasons["c1"]
    assert isinstance(denial.to_error(), InvalidArgument)
    # One candidate that could fit later means retrying makes sense.
    admitted(await h.ledger.reserve(one("fill", "b", tokens=1000)))
    mixed = denied(await h.ledger.reserve(req("m", cand("x", "a", tokens=950), cand("y", "b"))))
    assert not mixed.never_fits
    assert mixed.retry_after == pytest.approx(100 / (1000 / 60))


async def test_output_weight_and_requests_dimension(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec(tpm=10_000, rpm=2, output_weight=5)])
    res = admitted(await h.ledger.reserve(one("r1", tokens=100, out=100)))
    cost = res.cost["p1"]
    assert (cost.requests, cost.tokens, cost.input_tokens, cost.output_tokens) == (1, 600, 100, 500)
    admitted(await h.ledger.reserve(one("r2")))
    assert "pool p1: rpm exhausted" in denied(await h.ledger.reserve(one("r3"))).reasons["c1"]


async def test_fixed_minute_resets_at_the_window_not_continuously(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec(tpm=600, mode=Mode.FIXED_MINUTE)])
    admitted(await h.ledger.reserve(one("fill", tokens=600)))
    h.clock.advance(30)
    denial = denied(await h.ledger.reserve(one("r")))
    assert denial.retry_after == pytest.approx(30)
    h.clock.advance(30)
    admitted(await h.ledger.reserve(one("r", tokens=600)))


# -- idempotency and the state machine ----------------------------------------------------------


async def test_retried_reserve_returns_the_same_reservation(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec(tpm=1000)])
    results = await asyncio.gather(*(h.ledger.reserve(one("same", tokens=300)) for _ in range(20)))
    ids = {admitted(r).reservation_id for r in results}
    assert len(ids) == 1
    assert sum(not admitted(r).replayed for r in results) == 1
    assert (await h.ledger.snapshot("p1")).dims["tpm"].remaining == 700
    assert await h.kinds() == ["reserved"]


async def test_settle_refunds_unused_and_is_idempotent(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec(tpm=1000)])
    res = admitted(await h.ledger.reserve(one("r", tokens=100, out=400)))
    first = await h.ledger.settle(res.reservation_id, Usage(1, 100, 100), "ok")
    assert first.charged["p1"].tokens == 200
    assert first.adjustment["p1"].tokens == -300
    assert not first.replayed
    assert not first.late
    again = await h.ledger.settle(res.reservation_id, Usage(1, 900, 900), "error")
    assert again.replayed
    assert again.charged == first.charged
    assert again.outcome == "ok"
    snap = (await h.ledger.snapshot("p1")).dims["tpm"]
    assert (snap.remaining, snap.reserved) == (800, 0)
    assert (await h.ledger.get(res.reservation_id)).state is S.SETTLED
    assert await h.kinds() == ["reserved", "settled"]


async def test_pool_without_refund_keeps_the_estimate(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec(tpm=1000, refund_unused=False)])
    res = admitted(await h.ledger.reserve(one("r", tokens=100, out=400)))
    result = await h.ledger.settle(res.reservation_id, Usage(1, 100, 100), "ok")
    assert result.charged["p1"].tokens == 500
    assert (await h.ledger.snapshot("p1")).dims["tpm"].remaining == 500


async def test_release_refunds_a_reserved_lease_once(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec(tpm=1000, refund_unused=False)])
    res = admitted(await h.ledger.reserve(one("r", tokens=500)))
    released = await h.ledger.release(res.reservation_id)
    assert released.state is S.RELEASED
    assert (await h.ledger.release(res.reservation_id)).replayed
    snap = (await h.ledger.snapshot("p1")).dims["tpm"]
    assert (snap.remaining, snap.reserved) == (1000, 0)
    with pytest.raises(FailedPrecondition):
        await h.ledger.settle(res.reservation_id, Usage(), "ok")
    assert await h.kinds() == ["reserved", "released"]


async def test_concurrent_releases_each_give_back_once(make_ledger: MakeLedger) -> None:
    """Releases arriving together (batched into one script call on Redis) are decided one by
    one: each reservation is given back exactly once, a repeat is a replay, a dispatched one
    and an unknown id are refused on their own without failing the others."""
    h = await make_ledger([spec(tpm=100_000, refund_unused=False)])
    held = [admitted(await h.ledger.reserve(one(f"r{i}", tokens=100))) for i in range(40)]
    dispatched = held.pop()
    await h.ledger.ack_dispatched(dispatched.reservation_id)
    ids = [r.reservation_id for r in held] * 2
    random.Random(3).shuffle(ids)
    outcomes = await asyncio.gather(
        *(h.ledger.release(i) for i in ids),
        h.ledger.release(dispatched.reservation_id),
        h.ledger.release(held[0].reservation_id[:-1] + "x"),
        return_exceptions=True,
    )
    *released, refused, unknown = outcomes
    assert isinstance(refused, FailedPrecondition)
    assert isinstance(unknown, NotFound | FailedPrecondition)
    assert all(isinstance(r, Reservation) and r.state is S.RELEASED for r in released)
    given_back = [
        r.reservation_id for r in released if isinstance(r, Reservation) and not r.replayed
    ]
    assert sorted(given_back) == sorted(r.reservation_id for r in held)
    snap = (await h.ledger.snapshot("p1")).dims["tpm"]
    assert snap.reserved == 100  # only the dispatched one still holds its cost
    assert (await h.kinds()).count("released") == len(held)


async def test_release_after_dispatch_is_refused(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec(tpm=1000)])
    res = admitted(await h.ledger.reserve(one("r")))
    assert (await h.ledger.ack_dispatched(res.reservation_id)).state is S.IN_FLIGHT
    assert (await h.ledger.ack_dispatched(res.reservation_id)).replayed
    with pytest.raises(FailedPrecondition):
        await h.ledger.release(res.reservation_id)
    assert await h.kinds() == ["reserved", "dispatched"]


async def test_expired_reserved_lease_is_refunded(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec(tpd=1000)])  # daily refill: ~0.01 token/s, negligible here
    res = admitted(await h.ledger.reserve(one("r", tokens=500, lease=10)))
    h.clock.advance(9)
    assert await h.ledger.expire_due() == []
    h.clock.advance(2)
    assert await h.ledger.expire_due() == [res.reservation_id]
    assert (await h.ledger.get(res.reservation_id)).state is S.ABANDONED
    snap = (await h.ledger.snapshot("p1")).dims["tpd"]
    assert (snap.remaining, snap.reserved) == (1000, 0)
    assert await h.ledger.expire_due() == []
    assert await h.kinds() == ["reserved", "abandoned"]


async def test_expired_in_flight_lease_is_not_refunded(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec(tpd=1000)])
    res = admitted(await h.ledger.reserve(one("r", tokens=500, lease=10)))
    await h.ledger.ack_dispatched(res.reservation_id)
    h.clock.advance(11)
    assert await h.ledger.expire_due() == [res.reservation_id]
    snap = (await h.ledger.snapshot("p1")).dims["tpd"]
    assert snap.remaining == pytest.approx(500, abs=1)
    assert snap.reserved == 0


async def test_extend_postpones_expiry(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec(tpd=1000)])
    res = admitted(await h.ledger.reserve(one("r", lease=10)))
    h.clock.advance(8)
    extended = await h.ledger.extend(res.reservation_id, 10)
    assert extended.lease_expires_at == pytest.approx(h.clock.now + 10)
    h.clock.advance(8)
    assert await h.ledger.expire_due() == []
    h.clock.advance(3)
    assert await h.ledger.expire_due() == [res.reservation_id]
    with pytest.raises(FailedPrecondition):
        await h.ledger.extend(res.reservation_id, 10)


async def test_late_settle_after_abandon_charges_the_difference(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec(tpd=1000)])
    res = admitted(await h.ledger.reserve(one("r", tokens=500, lease=10)))
    await h.ledger.ack_dispatched(res.reservation_id)
    h.clock.advance(11)
    await h.ledger.expire_due()
    late = await h.ledger.settle(res.reservation_id, Usage(1, 700, 0), "ok")
    assert late.late
    assert late.adjustment["p1"].tokens == 200
    assert (await h.ledger.snapshot("p1")).dims["tpd"].remaining == pytest.approx(300, abs=1)
    assert (await h.ledger.settle(res.reservation_id, Usage(), "ok")).replayed
    assert await h.kinds() == ["reserved", "dispatched", "abandoned", "settled"]


async def test_usage_beyond_reservation_is_debt_that_delays_admission(
    make_ledger: MakeLedger,
) -> None:
    h = await make_ledger([spec(tpm=600)])  # 10 tokens/s
    res = admitted(await h.ledger.reserve(one("r", tokens=100)))
    await h.ledger.settle(res.reservation_id, Usage(1, 700, 0), "ok")
    snap = (await h.ledger.snapshot("p1")).dims["tpm"]
    assert (snap.remaining, snap.debt) == (0, 100)
    assert denied(await h.ledger.reserve(one("next"))).retry_after == pytest.approx(20)
    h.clock.advance(20)
    admitted(await h.ledger.reserve(one("next")))


async def test_interim_usage_is_charged_as_it_happens(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec(tpm=600)])
    res = admitted(await h.ledger.reserve(one("r", tokens=100)))
    after = await h.ledger.report_usage(res.reservation_id, Usage(1, 300, 0))
    assert after.state is S.IN_FLIGHT
    assert after.usage.input_tokens == 300
    assert (await h.ledger.snapshot("p1")).dims["tpm"].remaining == 300
    await h.ledger.report_usage(res.reservation_id, Usage(1, 100, 0))
    assert (await h.ledger.snapshot("p1")).dims["tpm"].remaining == 200
    result = await h.ledger.settle(res.reservation_id, Usage(2, 400, 0), "ok")
    assert result.adjustment["p1"].tokens == 0
    assert await h.kinds() == ["reserved", "usage", "usage", "settled"]


# -- reconciliation -----------------------------------------------------------------------------


def obs(h_now: float, **kw: float | bool | None) -> Observation:
    return Observation(observed_at=h_now, **kw)  # type: ignore[arg-type]


async def test_reconcile_lowers_now_and_raises_slowly(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec(tpm=1000)])
    assert await h.ledger.reconcile("p1", obs(h.clock.now, remaining_tokens=200))
    assert (await h.ledger.snapshot("p1")).dims["tpm"].remaining == 200
    assert await h.ledger.reconcile("p1", obs(h.clock.now, remaining_tokens=1000))
    raised = (await h.ledger.snapshot("p1")).dims["tpm"].remaining
    assert 200 < raised < 1000


async def test_reconcile_ignores_an_older_observation(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec(tpm=1000)])
    assert await h.ledger.reconcile("p1", obs(h.clock.now, remaining_tokens=500))
    assert not await h.ledger.reconcile("p1", obs(h.clock.now - 1, remaining_tokens=10))
    assert (await h.ledger.snapshot("p1")).dims["tpm"].remaining == 500
    assert await h.kinds() == ["reconciled"]


async def test_reconcile_treats_minus_one_and_nan_as_unknown(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec(tpm=1000, rpm=100)])
    o = obs(h.clock.now, remaining_tokens=-1, limit_tokens=math.nan, remaining_requests=None)
    assert await h.ledger.reconcile("p1", o)
    snap = await h.ledger.snapshot("p1")
    assert (snap.dims["tpm"].remaining, snap.dims["tpm"].effective_limit) == (1000, 1000)
    assert snap.dims["rpm"].remaining == 100


async def test_rate_limited_with_retry_after_blocks_the_pool(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec(tpm=1000)])
    assert await h.ledger.reconcile("p1", obs(h.clock.now, rate_limited=True, retry_after_s=30))
    denial = denied(await h.ledger.reserve(one("r")))
    assert denial.retry_after == pytest.approx(30)
    assert "blocked" in denial.reasons["c1"]
    assert (await h.ledger.snapshot("p1")).blocked_until == pytest.approx(h.clock.now + 30)
    h.clock.advance(30)
    admitted(await h.ledger.reserve(one("r")))


async def test_observed_lower_limit_lowers_capacity(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec(tpm=1000, safety_factor=0.9)])
    assert await h.ledger.reconcile("p1", obs(h.clock.now, limit_tokens=500))
    snap = (await h.ledger.snapshot("p1")).dims["tpm"]
    assert (snap.limit, snap.effective_limit, snap.capacity) == (1000, 500, 450)
    assert denied(await h.ledger.reserve(one("r", tokens=460))).never_fits
    assert await h.ledger.reconcile("p1", obs(h.clock.now, limit_tokens=5000))
    assert (await h.ledger.snapshot("p1")).dims["tpm"].effective_limit == 1000


# -- limits, snapshots, bad input ---------------------------------------------------------------


async def test_set_limits_changes_capacity_and_is_journalled(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec(tpm=1000, safety_factor=0.9)])
    snap = await h.ledger.set_limits("p1", {"tpm": 500, "rpm": 10})
    assert snap.dims["tpm"].capacity == 450
    assert snap.dims["tpm"].remaining == 450
    assert snap.dims["rpm"].remaining == 9
    snap = await h.ledger.set_limits("p1", {"rpm": None})
    assert set(snap.dims) == {"tpm"}
    assert await h.kinds() == ["limits_set", "limits_set"]


async def test_snapshot_shows_used_and_reserved(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec(tpm=600)])
    admitted(await h.ledger.reserve(one("r", tokens=300)))
    snap = await h.ledger.snapshot("p1")
    tpm = snap.dims["tpm"]
    assert (tpm.used, tpm.reserved, tpm.remaining, tpm.debt) == (300, 300, 300, 0)
    assert tpm.refill_in == pytest.approx(30)
    assert snap.blocked_until is None


async def test_bad_input_is_refused_without_touching_buckets(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec("a", tpm=1000), spec("b", "other", tpm=1000)])
    with pytest.raises(InvalidArgument, match=r"estimate\.input_tokens"):
        TokenEstimate(math.nan, 1)
    with pytest.raises(InvalidArgument, match=r"usage\.output_tokens"):
        Usage(1, 1, -5)
    with pytest.raises(NotFound):
        await h.ledger.reserve(one("r", "nope"))
    with pytest.raises(InvalidArgument, match="candidates"):
        await h.ledger.reserve(req("r", cand("x", "a"), cand("y", "b")))
    with pytest.raises(NotFound):
        await h.ledger.settle("fam#" + "0" * 32, Usage(), "ok")
    with pytest.raises(NotFound):
        await h.ledger.snapshot("nope")
    with pytest.raises(InvalidArgument, match=r"limits\.tpm"):
        await h.ledger.set_limits("a", {"tpm": math.inf})
    with pytest.raises(InvalidArgument, match=r"limits\.bogus"):
        await h.ledger.set_limits("a", {"bogus": 1})
    res = admitted(await h.ledger.reserve(one("ok", "a")))
    with pytest.raises(InvalidArgument, match="lease_s"):
        await h.ledger.extend(res.reservation_id, -1)
    with pytest.raises(InvalidArgument, match="outcome"):
        await h.ledger.settle(res.reservation_id, Usage(), "")
    assert (await h.ledger.snapshot("a")).dims["tpm"].remaining == 900
    assert await h.kinds() == ["reserved"]


async def test_journal_has_exactly_one_event_per_mutation(make_ledger: MakeLedger) -> None:
    h = await make_ledger([spec(tpm=1000)])
    lg = h.ledger
    r1 = admitted(await lg.reserve(one("r1", tokens=500, lease=10)))
    await lg.reserve(one("r1", tokens=500))  # replay: no event
    denied(await lg.reserve(one("big", tokens=600)))  # denial: no event
    await lg.ack_dispatched(r1.reservation_id)
    await lg.ack_dispatched(r1.reservation_id)  # replay: no event
    await lg.report_usage(r1.reservation_id, Usage(1, 50, 0))
    await lg.extend(r1.reservation_id, 30)
    await lg.settle(r1.reservation_id, Usage(1, 60, 0), "ok")
    await lg.settle(r1.reservation_id, Usage(1, 60, 0), "ok")  # replay: no event
    r2 = admitted(await lg.reserve(one("r2")))
    await lg.release(r2.reservation_id)
    await lg.release(r2.reservation_id)  # replay: no event
    r3 = admitted(await lg.reserve(one("r3", lease=5)))
    h.clock.advance(6)
    await lg.expire_due()
    await lg.reconcile("p1", obs(h.clock.now, remaining_tokens=100))
    await lg.reconcile("p1", obs(h.clock.now - 1, remaining_tokens=100))  # stale: no event
    await lg.set_limits("p1", {"tpm": 2000})
    events = await h.journal()
    assert [e.kind.value for e in events] == [
        "reserved", "dispatched", "usage", "extended", "settled",
        "reserved", "released", "reserved", "abandoned", "reconciled", "limits_set",
    ]  # fmt: skip
    assert len({e.event_id for e in events}) == len(events)
    rids = [e.reservation_id for e in events[:9]]
    assert rids == [r1.reservation_id] * 5 + [r2.reservation_id] * 2 + [r3.reservation_id] * 2
    assert all(e.pool_ids == ("p1",) for e in events)
    assert events[0].data["cost"]["p1"]["tokens"] == 500
    assert events[4].data["outcome"] == "ok"


# -- events that change no quota -----------------------------------------------------------------


async def test_recorded_events_join_the_journal_with_the_store_clock(
    make_ledger: MakeLedger,
) -> None:
    h = await make_ledger([spec(tpm=1000)])
    before = len(await h.journal())
    await h.ledger.record(EventKind.HANDOVER, None, (), {"session": "s1", "from": "a", "to": "b"})
    await h.ledger.record(EventKind.BREAKER, None, ("p1",), {"agent_version": "auditor@1"})
    events = (await h.journal())[before:]
    assert [e.kind for e in events] == [EventKind.HANDOVER, EventKind.BREAKER]
    assert events[0].data == {"session": "s1", "from": "a", "to": "b"}
    assert events[1].pool_ids == ("p1",)
    assert all(e.at == h.clock.now for e in events)
