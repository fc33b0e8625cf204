"""What a replica does for each pool while Redis is unreachable (DESIGN §7, failure behaviour).

``FailoverLedger`` wraps the Redis ledger. When a Redis call fails (BackendUnavailable), it
stops trying for ``cooldown_s`` (a breaker: an outage must not cost every caller a timeout)
and decides reservations locally, pool by pool:

- ``static_share``: from a local bucket holding ``capacity * static_share / replicas``, so the
  replicas together never exceed the pool even though they cannot coordinate;
- ``closed``: deny (retry after the cooldown);
- ``open``: admit without counting.

Local decisions are journalled in a local journal and appended to the Redis journal streams
once Redis answers again, by one background replay at a time in batches: callers neither wait
for it nor see its failure (their own call succeeded, and treating it as failed would admit
them a second time locally), and concurrent callers do not each copy the same events.
Reservations made locally stay local (settle, release... go to the local ledger); the Redis
pools never learn of locally admitted cost, which provider
observations then correct. Calls about Redis-held reservations, snapshots and limit changes
fail with BackendUnavailable during the outage: the regional agent's outbox retries them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from dispatcher.errors import BackendUnavailable, InvalidArgument
from dispatcher.ledger.events import EventKind
from dispatcher.ledger.journal import MemoryJournal
from dispatcher.ledger.memory import Clock, MemoryLedger
from dispatcher.ledger.model import (
    Denial,
    FailureMode,
    Observation,
    PoolSnapshot,
    PoolSpec,
    Reservation,
    ReserveRequest,
    SettleResult,
    Usage,
)
from dispatcher.ledger.redis_backend import RedisLedger
from dispatcher.logs import get_logger

T = TypeVar("T")

log = get_logger(__name__)

#: Events per append while replaying: one pipeline, not the whole outage in one.
REPLAY_BATCH = 500
#: How long ``aclose`` lets a replay in progress finish.
REPLAY_CLOSE_WAIT_S = 2.0


def failure_mode(spec: PoolSpec) -> FailureMode:
    """The mode in force; a static share of zero is no share at all, so closed."""
    if spec.failure_mode is FailureMode.STATIC_SHARE and spec.static_share == 0:
        return FailureMode.CLOSED
    return spec.failure_mode


def local_spec(spec: PoolSpec, replicas: int) -> PoolSpec:
    """The pool as one replica may use it alone: its share, or unlimited when ``open``
    (and when ``closed``, which never reaches the local bucket)."""
    share = spec.static_share / replicas
    if failure_mode(spec) is not FailureMode.STATIC_SHARE:
        share = 0.0  # 0 = not enforced here

    def part(limit: float | None) -> float | None:
        return limit * share if limit is not None and share > 0 else None

    return replace(
        spec,
        rpm=part(spec.rpm),
        tpm=part(spec.tpm),
        input_tpm=part(spec.input_tpm),
        output_tpm=part(spec.output_tpm),
        tpd=part(spec.tpd),
    )


class FailoverLedger:
    """A :class:`RedisLedger` that keeps admitting by failure mode while Redis is down."""

    def __init__(
        self,
        primary: RedisLedger,
        pools: Sequence[PoolSpec],
        *,
        replicas: int,
        replica_id: str | None = None,
        cooldown_s: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if replicas < 1:
            raise InvalidArgument("replicas", "must be >= 1")
        self.replicas = replicas
        self.primary = primary
        self._specs = {p.id: p for p in pools}
        self.local = MemoryLedger(
            [local_spec(p, replicas) for p in pools],
            journal=MemoryJournal(replica_id or f"local-{uuid.uuid4().hex[:12]}"),
        )
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._down_until = float("-inf")
        self._replayer: asyncio.Task[None] | None = None

    @property
    def degraded(self) -> bool:
        return self._clock() < self._down_until

    async def _primary(self, call: Callable[[], Awaitable[T]]) -> T:
        """Call Redis unless the breaker is open; open it on failure; replay once back."""
        if self.degraded:
            raise BackendUnavailable("redis", "breaker open after a recent failure")
        try:
            result = await call()
        except BackendUnavailable:
            self._down_until = self._clock() + self._cooldown_s
            raise
        self._start_replay()
        return result

    def _start_replay(self) -> None:
        busy = self._replayer is not None and not self._replayer.done()
        if not busy and self.local.journal.has_unacked():
            self._replayer = asyncio.create_task(self._replay(), name="outage-journal-replay")

    async def _replay(self) -> None:
        # At-least-once: a reply lost after the append appends a batch again; the journal
        # source keys such copies by their origin id, so SQL stores each event once.
        try:
            while events := self.local.journal.unacked()[:REPLAY_BATCH]:
                await self.primary.append_journal(events)
                await self.local.journal.ack([e.event_id for e in events])
        except BackendUnavailable as exc:
            # Not the breaker's business: callers' own calls decide whether Redis is down
            # (a replay timing out behind a burst of them must not send the replica local).
            log.warning("outage journal replay failed; the next success retries", error=str(exc))

    async def replayed(self) -> None:
        """Wait for the replay in progress, if any (tests; shutdown)."""
        if self._replayer is not None:
            await asyncio.shield(self._replayer)

    async def reserve(self, request: ReserveRequest) -> Reservation | Denial:
        try:
            return await self._primary(lambda: self.primary.reserve(request))
        except BackendUnavailable:
            return await self._reserve_locally(request)

    async def _reserve_locally(self, request: ReserveRequest) -> Reservation | Denial:
        allowed, reasons = [], {}
        for cand in request.candidates:
            closed = [p for p in cand.pool_ids if self._mode(p) is FailureMode.CLOSED]
            if closed:
                reasons[cand.candidate_id] = (
                    f"pool {closed[0]}: hot store down, failure mode closed"
                )
            else:
                allowed.append(cand)
        if not allowed:
            return Denial(self._cooldown_s, reasons)
        result = await self.local.reserve(replace(request, candidates=tuple(allowed)))
        if isinstance(result, Denial):
            return replace(result, reasons={**reasons, **result.reasons})
        # Report the index and spill relative to what the caller asked for.
        index = request.candidates.index(allowed[result.candidate_index])
        spilled = request.candidates[0].candidate_id if index else None
        return replace(result, candidate_index=index, spilled_from=spilled)

    def _mode(self, pool_id: str) -> FailureMode | None:
        spec = self._specs.get(pool_id)
        return None if spec is None else failure_mode(spec)  # unknown: the ledger says so

    async def _on_reservation(
        self,
        reservation_id: str,
        local: Callable[[], Awaitable[T]],
        remote: Callable[[], Awaitable[T]],
    ) -> T:
        if self.local.holds(reservation_id):
            return await local()
        return await self._primary(remote)

    async def get(self, reservation_id: str) -> Reservation:
        lg, rg = self.local, self.primary
        return await self._on_reservation(
            reservation_id, lambda: lg.get(reservation_id), lambda: rg.get(reservation_id)
        )

    async def ack_dispatched(self, reservation_id: str) -> Reservation:
        lg, rg = self.local, self.primary
        return await self._on_reservation(
            reservation_id,
            lambda: lg.ack_dispatched(reservation_id),
            lambda: rg.ack_dispatched(reservation_id),
        )

    async def extend(self, reservation_id: str, lease_s: float) -> Reservation:
        lg, rg = self.local, self.primary
        return await self._on_reservation(
            reservation_id,
            lambda: lg.extend(reservation_id, lease_s),
            lambda: rg.extend(reservation_id, lease_s),
        )

    async def report_usage(self, reservation_id: str, delta: Usage) -> Reservation:
        lg, rg = self.local, self.primary
        return await self._on_reservation(
            reservation_id,
            lambda: lg.report_usage(reservation_id, delta),
            lambda: rg.report_usage(reservation_id, delta),
        )

    async def settle(self, reservation_id: str, usage: Usage, outcome: str) -> SettleResult:
        lg, rg = self.local, self.primary
        return await self._on_reservation(
            reservation_id,
            lambda: lg.settle(reservation_id, usage, outcome),
            lambda: rg.settle(reservation_id, usage, outcome),
        )

    async def release(self, reservation_id: str) -> Reservation:
        lg, rg = self.local, self.primary
        return await self._on_reservation(
            reservation_id, lambda: lg.release(reservation_id), lambda: rg.release(reservation_id)
        )

    async def expire_due(self, limit: int = 1000) -> list[str]:
        done = await self.local.expire_due(limit)
        # Redis leases wait for Redis; the local ones are swept regardless.
        with contextlib.suppress(BackendUnavailable):
            done += await self._primary(lambda: self.primary.expire_due(limit - len(done)))
        return done

    async def reconcile(self, pool_id: str, observation: Observation) -> bool:
        try:
            return await self._primary(lambda: self.primary.reconcile(pool_id, observation))
        except BackendUnavailable:
            return await self.local.reconcile(pool_id, observation)

    async def snapshot(self, pool_id: str) -> PoolSnapshot:
        return await self._primary(lambda: self.primary.snapshot(pool_id))

    async def record(
        self,
        kind: EventKind,
        reservation_id: str | None,
        pool_ids: Sequence[str],
        data: Mapping[str, Any],
    ) -> None:
        try:
            await self._primary(lambda: self.primary.record(kind, reservation_id, pool_ids, data))
        except BackendUnavailable:
            await self.local.record(kind, reservation_id, pool_ids, data)

    async def set_limits(self, pool_id: str, limits: Mapping[str, float | None]) -> PoolSnapshot:
        return await self._primary(lambda: self.primary.set_limits(pool_id, limits))

    async def aclose(self) -> None:
        if self._replayer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._replayer), REPLAY_CLOSE_WAIT_S)
            self._replayer.cancel()
        await self.primary.aclose()
