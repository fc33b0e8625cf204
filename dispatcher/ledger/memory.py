"""In-memory hot store: the embedded default, the reference semantics, the failure fallback.

Every public method runs without an ``await`` in its body, so on the event loop each call is
one critical section: the decision, the bucket change and its journal event happen together
or not at all. Not thread-safe; one instance belongs to one event loop.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from dispatcher.errors import FailedPrecondition, InvalidArgument, NotFound
from dispatcher.ledger import bucket
from dispatcher.ledger.admission import check_limits, check_outcome, plan, pool_spec
from dispatcher.ledger.events import EventKind
from dispatcher.ledger.journal import MemoryJournal
from dispatcher.ledger.model import (
    Cost,
    Denial,
    Observation,
    PoolSnapshot,
    PoolSpec,
    Reservation,
    ReservationState,
    ReserveRequest,
    SettleResult,
    Usage,
    check_number,
    reservation_id_for,
)

Clock = Callable[[], float]
ZERO = Cost()
_S = ReservationState


@dataclass(slots=True)
class _Record:
    res: Reservation
    charged: dict[str, Cost]  # what each pool has been debited for this reservation so far
    settled: SettleResult | None = None


def _costs(costs: Mapping[str, Cost]) -> dict[str, dict[str, float]]:
    return {pid: cost.to_dict() for pid, cost in costs.items()}


class MemoryLedger:
    """The ledger in this process; ``retention_s`` is how long a closed reservation stays
    for idempotent replays."""

    def __init__(
        self,
        pools: Sequence[PoolSpec],
        *,
        clock: Clock = time.time,
        journal: MemoryJournal | None = None,
        retention_s: float = 86400.0,
    ) -> None:
        self._specs = {p.id: p for p in pools}
        if len(self._specs) != len(pools):
            raise InvalidArgument("pools", "duplicate pool id")
        self._clock = clock
        now = clock()
        self._pools = {p.id: bucket.PoolState.fresh(p, now) for p in pools}
        self._records: dict[str, _Record] = {}
        self._leases: list[tuple[float, str]] = []  # heap; stale entries skipped on pop
        self._closed: deque[tuple[float, str]] = deque()
        self._retention_s = retention_s
        self.journal = journal or MemoryJournal()

    # -- reservations ---------------------------------------------------------------------

    async def reserve(self, request: ReserveRequest) -> Reservation | Denial:
        family, costs = plan(request, self._specs)
        rid = reservation_id_for(family, request.request_id)
        if (rec := self._records.get(rid)) is not None:
            return replace(rec.res, replayed=True)
        now = self._clock()
        pools = {p: self._pools[p] for c in request.candidates for p in c.pool_ids}
        for pool in pools.values():
            bucket.refresh(pool, now)
        index, reasons, retry = bucket.choose(pools, costs, request.candidates, now)
        if index < 0:
            return Denial(retry, reasons, never_fits=retry is None)
        cand, cost = request.candidates[index], costs[index]
        for pid, pool_cost in cost.items():
            bucket.debit(self._pools[pid], pool_cost, hold=True)
        spilled = request.candidates[0].candidate_id if index else None
        res = Reservation(
            rid,
            request.request_id,
            index,
            cand.candidate_id,
            cand.pool_ids,
            cost,
            _S.RESERVED,
            now + request.lease_s,
            now,
            spilled,
        )
        self._records[rid] = _Record(res, dict(cost))
        heapq.heappush(self._leases, (res.lease_expires_at, rid))
        self.journal.append(
            EventKind.RESERVED,
            now,
            rid,
            cand.pool_ids,
            {
                "request_id": request.request_id,
                "candidate_id": cand.candidate_id,
                "candidate_index": index,
                "spilled_from": spilled,
                "cost": _costs(cost),
                "lease_expires_at": res.lease_expires_at,
            },
        )
        return res

    def _record(self, reservation_id: str) -> _Record:
        rec = self._records.get(reservation_id)
        if rec is None:
            raise NotFound("reservation", reservation_id)
        return rec

    def _open(self, reservation_id: str, action: str) -> _Record:
        rec = self._record(reservation_id)
        if not rec.res.state.open:
            raise FailedPrecondition(
                f"cannot {action} reservation {reservation_id}: {rec.res.state}"
            )
        return rec

    def _close(self, rec: _Record, state: ReservationState, now: float) -> None:
        rec.res = replace(rec.res, state=state)
        self._closed.append((now, rec.res.reservation_id))

    def holds(self, reservation_id: str) -> bool:
        """Whether this ledger made (and still remembers) the reservation."""
        return reservation_id in self._records

    async def get(self, reservation_id: str) -> Reservation:
        return self._record(reservation_id).res

    async def ack_dispatched(self, reservation_id: str) -> Reservation:
        rec = self._open(reservation_id, "dispatch")
        if rec.res.state is _S.IN_FLIGHT:
            return replace(rec.res, replayed=True)
        rec.res = replace(rec.res, state=_S.IN_FLIGHT)
        self.journal.append(EventKind.DISPATCHED, self._clock(), reservation_id, rec.res.pool_ids)
        return rec.res

    async def extend(self, reservation_id: str, lease_s: float) -> Reservation:
        check_number(lease_s, "lease_s", positive=True)
        rec = self._open(reservation_id, "extend")
        now = self._clock()
        rec.res = replace(rec.res, lease_expires_at=now + lease_s)
        heapq.heappush(self._leases, (rec.res.lease_expires_at, reservation_id))
        self.journal.append(
            EventKind.EXTENDED,
            now,
            reservation_id,
            rec.res.pool_ids,
            {"lease_expires_at": rec.res.lease_expires_at},
        )
        return rec.res

    async def report_usage(self, reservation_id: str, delta: Usage) -> Reservation:
        rec = self._record(reservation_id)
        if rec.res.state not in (_S.RESERVED, _S.IN_FLIGHT, _S.ABANDONED):
            raise FailedPrecondition(f"cannot report usage on {reservation_id}: {rec.res.state}")
        now, total = self._clock(), rec.res.usage + delta
        for pid in rec.res.pool_ids:
            need = self._specs[pid].usage_cost(total)
            over = need.max(rec.charged[pid]) - rec.charged[pid]
            bucket.refresh(self._pools[pid], now)
            bucket.debit(self._pools[pid], over, hold=False)
            rec.charged[pid] += over
        state = _S.IN_FLIGHT if rec.res.state is _S.RESERVED else rec.res.state
        rec.res = replace(rec.res, usage=total, state=state)
        self.journal.append(
            EventKind.USAGE,
            now,
            reservation_id,
            rec.res.pool_ids,
            {
                "delta": delta.to_dict(),
                "usage": total.to_dict(),
                "charged": _costs(rec.charged),
            },
        )
        return rec.res

    async def settle(self, reservation_id: str, usage: Usage, outcome: str) -> SettleResult:
        check_outcome(outcome)
        rec = self._record(reservation_id)
        if rec.settled is not None:
            return replace(rec.settled, replayed=True)
        was = rec.res.state
        if was is _S.RELEASED:
            raise FailedPrecondition(f"cannot settle released reservation {reservation_id}")
        now = self._clock()
        charged: dict[str, Cost] = {}
        adjustment: dict[str, Cost] = {}
        for pid in rec.res.pool_ids:
            spec, pool = self._specs[pid], self._pools[pid]
            actual = spec.usage_cost(usage)
            charged[pid] = actual if spec.refund_unused else actual.max(rec.res.cost[pid])
            adjustment[pid] = charged[pid] - rec.charged[pid]
            bucket.refresh(pool, now)
            bucket.credit(pool, ZERO - adjustment[pid])
            if was.open:
                bucket.unhold(pool, rec.res.cost[pid])
        rec.charged = charged
        rec.res = replace(rec.res, usage=usage)
        self._close(rec, _S.SETTLED, now)
        late = was is _S.ABANDONED
        rec.settled = SettleResult(rec.res, outcome, charged, adjustment, late=late)
        self.journal.append(
            EventKind.SETTLED,
            now,
            reservation_id,
            rec.res.pool_ids,
            {
                "outcome": outcome,
                "usage": usage.to_dict(),
                "charged": _costs(charged),
                "adjustment": _costs(adjustment),
                "late": late,
            },
        )
        return rec.settled

    async def release(self, reservation_id: str) -> Reservation:
        rec = self._record(reservation_id)
        if rec.res.state is _S.RELEASED:
            return replace(rec.res, replayed=True)
        if rec.res.state is not _S.RESERVED:
            raise FailedPrecondition(f"cannot release {reservation_id}: {rec.res.state}")
        now = self._clock()
        refunded = self._refund(rec, now)
        self._close(rec, _S.RELEASED, now)
        self.journal.append(
            EventKind.RELEASED,
            now,
            reservation_id,
            rec.res.pool_ids,
            {"refunded": _costs(refunded)},
        )
        return rec.res

    def _refund(self, rec: _Record, now: float) -> dict[str, Cost]:
        """Give back everything charged and drop the hold (the provider was never called)."""
        refunded = dict(rec.charged)
        for pid in rec.res.pool_ids:
            bucket.refresh(self._pools[pid], now)
            bucket.credit(self._pools[pid], rec.charged[pid])
            bucket.unhold(self._pools[pid], rec.res.cost[pid])
            rec.charged[pid] = ZERO
        return refunded

    async def expire_due(self, limit: int = 1000) -> list[str]:
        now, done = self._clock(), list[str]()
        while self._leases and self._leases[0][0] <= now and len(done) < limit:
            _, rid = heapq.heappop(self._leases)
            rec = self._records.get(rid)
            if rec is None or not rec.res.state.open or rec.res.lease_expires_at > now:
                continue  # closed meanwhile, or extended: a later heap entry covers it
            was = rec.res.state
            if was is _S.RESERVED:
                self._refund(rec, now)
            else:
                for pid in rec.res.pool_ids:
                    bucket.unhold(self._pools[pid], rec.res.cost[pid])
            self._close(rec, _S.ABANDONED, now)
            self.journal.append(
                EventKind.ABANDONED,
                now,
                rid,
                rec.res.pool_ids,
                {"from_state": was.value, "refunded": was is _S.RESERVED},
            )
            done.append(rid)
        self._forget_closed(now)
        return done

    def _forget_closed(self, now: float) -> None:
        while self._closed and self._closed[0][0] <= now - self._retention_s:
            rec = self._records.get(self._closed.popleft()[1])
            if rec is not None and not rec.res.state.open:
                del self._records[rec.res.reservation_id]

    # -- pools ----------------------------------------------------------------------------

    async def reconcile(self, pool_id: str, observation: Observation) -> bool:
        pool_spec(self._specs, pool_id)
        now = self._clock()
        applied = bucket.observe(self._pools[pool_id], observation, now)
        if applied is None:
            return False
        self.journal.append(EventKind.RECONCILED, now, None, (pool_id,), applied)
        return True

    async def snapshot(self, pool_id: str) -> PoolSnapshot:
        pool_spec(self._specs, pool_id)
        return bucket.snapshot(self._pools[pool_id], self._clock())

    async def set_limits(self, pool_id: str, limits: Mapping[str, float | None]) -> PoolSnapshot:
        pool_spec(self._specs, pool_id)
        checked, now = check_limits(limits), self._clock()
        bucket.set_limits(self._pools[pool_id], checked, now)
        self.journal.append(EventKind.LIMITS_SET, now, None, (pool_id,), {"limits": checked})
        return bucket.snapshot(self._pools[pool_id], now)

    async def record(
        self,
        kind: EventKind,
        reservation_id: str | None,
        pool_ids: Sequence[str],
        data: Mapping[str, Any],
    ) -> None:
        self.journal.append(kind, self._clock(), reservation_id, pool_ids, data)

    async def aclose(self) -> None:
        return None
