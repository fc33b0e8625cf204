"""One replica of the ledger bench: its callers, its phases and what it reports.

A replica runs in its own process (redis backend) or in the bench's own loop (memory). All
replicas follow one timeline of absolute wall-clock times handed to them by the bench:

1. the paced phase: each caller issues reserve attempts at ``rate_per_caller`` (Poisson
   arrivals), holds what it got a little, then releases it, settles it (dispatch, sometimes
   interim usage, settle below the estimate) or abandons it to the sweeper; callers finish
   the request in hand, retrying settles and releases the hot store refused while down (as
   the regional agent's outbox would);
2. speed rounds, unpaced, after the paced phase so their overload cannot spoil it: ``floor``
   (every caller calls ``return 1`` through a client set up like the ledger's) then
   ``reserve`` (every caller reserves in a loop on pools too large to deny), repeated; the
   memory backend has no floor;
3. the drain: local leases are swept and the local outage journal is pushed back to Redis.

Every mutation a call confirmed is reported as ``(kind, reservation id)``, so the bench can
match them one by one against the journal and SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, TypeVar, cast

from dispatcher.errors import BackendUnavailable, FailedPrecondition, NotFound
from dispatcher.ledger import open_ledger
from dispatcher.ledger.fallback import FailoverLedger
from dispatcher.ledger.model import (
    Candidate,
    Denial,
    PoolSpec,
    Reservation,
    ReserveRequest,
    TokenEstimate,
    Usage,
)
from dispatcher.ledger.protocol import Ledger
from dispatcher.ledger.sweeper import sweep
from dispatcher.logs import configure_logging

T = TypeVar("T")
Event = tuple[str, str]  # (journal event kind, reservation id)

SWEEP_INTERVAL_S = 0.5
OUTBOX_RETRY_S = 0.1


@dataclass(frozen=True)
class ReplicaConfig:
    index: int
    backend: str  # "redis" | "memory"
    redis_url: str
    pools: tuple[PoolSpec, ...]
    families: tuple[tuple[str, str], ...]  # the two pools of each paced family
    tput_pools: tuple[str, ...]  # one per throughput family
    replicas: int
    callers: int
    rate_per_caller: float
    speed_rounds: int
    speed_round_s: float
    speed_gap_s: float
    seconds: float
    drain_s: float
    lease_s: float
    timeout_s: float
    max_connections: int
    deadline_s: float
    sweeper: bool
    seed: int
    p_release: float = 0.2
    p_abandon: float = 0.03
    p_usage: float = 0.1


@dataclass(frozen=True)
class Timeline:
    """Absolute times: the paced phase first, then the speed rounds (floor, reserve) x N."""

    start: float

    def paced(self, cfg: ReplicaConfig) -> tuple[float, float]:
        return self.start, self.start + cfg.seconds

    def speed(self, cfg: ReplicaConfig, rnd: int, what: str) -> tuple[float, float]:
        kinds = 2 if cfg.backend == "redis" else 1
        slot = rnd * kinds + (1 if what == "reserve" and kinds == 2 else 0)
        begin = self.start + cfg.seconds + cfg.speed_gap_s + slot * cfg.speed_round_s
        return begin, begin + cfg.speed_round_s

    def end(self, cfg: ReplicaConfig) -> float:
        if cfg.speed_rounds < 1:
            return self.start + cfg.seconds
        return self.speed(cfg, cfg.speed_rounds - 1, "reserve")[1]


@dataclass
class ReplicaReport:
    index: int
    events: list[Event] = field(default_factory=list)
    local_reservations: int = 0
    attempts: int = 0
    admitted: int = 0
    denied: int = 0
    floor_calls: int = 0
    speed_reserves: int = 0
    speed_reserves_local: int = 0
    floor_errors: int = 0
    speed_errors: int = 0
    reserve_ms_paced: list[float] = field(default_factory=list)
    reserve_ms_unpaced: list[float] = field(default_factory=list)
    calls: int = 0
    calls_past_deadline: Counter[str] = field(default_factory=Counter)
    max_call_ms: float = 0.0
    sweeps: int = 0
    sweep_max_ms: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    local_unreplayed: int = 0
    unfinished: int = 0
    last_lease_at: float = 0.0


class Replica:
    def __init__(self, cfg: ReplicaConfig, ledger: Ledger, floor: Callable[[], Awaitable[Any]]):
        self.cfg = cfg
        self.ledger = ledger
        self.floor = floor
        self.report = ReplicaReport(cfg.index)
        self._max_local_lease_at = 0.0

    # -- bookkeeping ----------------------------------------------------------------------

    async def _timed(self, op: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await call
        finally:
            ms = (time.perf_counter() - started) * 1000
            self.report.calls += 1
            self.report.max_call_ms = max(self.report.max_call_ms, ms)
            if ms > self.cfg.deadline_s * 1000:
                self.report.calls_past_deadline[op] += 1

    def _event(self, kind: str, rid: str) -> None:
        self.report.events.append((kind, rid))

    def _is_local(self, rid: str) -> bool:
        return isinstance(self.ledger, FailoverLedger) and self.ledger.local.holds(rid)

    # -- speed rounds -----------------------------------------------------------------------

    async def _floor_caller(self, end: float) -> None:
        while time.time() < end:
            try:
                await self.floor()
            except BackendUnavailable:
                self.report.floor_errors += 1
                continue
            if time.time() < end:
                self.report.floor_calls += 1

    async def _reserve_caller(self, caller: int, end: float, rnd: int) -> None:
        cfg, n = self.cfg, 0
        pool = cfg.tput_pools[caller % len(cfg.tput_pools)]
        estimate = TokenEstimate(100, 50)
        while time.time() < end:
            n += 1
            request = ReserveRequest(
                f"{cfg.index}.t{rnd}.{caller}.{n}", (Candidate("tput", (pool,), estimate),), 1.0
            )
            started = time.perf_counter()
            try:
                res = await self._timed("reserve_unpaced", self.ledger.reserve(request))
            except BackendUnavailable:
                self.report.speed_errors += 1
                continue
            await asyncio.sleep(0)  # the memory ledger never yields on its own
            if not isinstance(res, Reservation) or res.replayed:
                continue
            self._event("reserved", res.reservation_id)
            self.report.last_lease_at = max(self.report.last_lease_at, res.lease_expires_at)
            if time.time() >= end:
                continue
            self.report.reserve_ms_unpaced.append((time.perf_counter() - started) * 1000)
            if self._is_local(res.reservation_id):
                self.report.speed_reserves_local += 1
            else:
                self.report.speed_reserves += 1

    async def speed_rounds(self, timeline: Timeline) -> None:
        for rnd in range(self.cfg.speed_rounds):
            if self.cfg.backend == "redis":
                begin, end = timeline.speed(self.cfg, rnd, "floor")
                await _sleep_until(begin)
                await asyncio.gather(*(self._floor_caller(end) for _ in range(self.cfg.callers)))
            begin, end = timeline.speed(self.cfg, rnd, "reserve")
            await _sleep_until(begin)
            await asyncio.gather(
                *(self._reserve_caller(c, end, rnd) for c in range(self.cfg.callers))
            )

    # -- the paced phase ----------------------------------------------------------------------

    async def paced_caller(self, caller: int, begin: float, end: float, drain_at: float) -> None:
        cfg = self.cfg
        rng = random.Random(cfg.seed * 100_003 + caller)
        next_at = begin + rng.expovariate(cfg.rate_per_caller)
        n = 0
        while next_at < end:
            await _sleep_until(next_at)
            next_at += rng.expovariate(cfg.rate_per_caller)
            n += 1
            await self._one_request(rng, f"{cfg.index}.p.{caller}.{n}", drain_at)

    async def _one_request(self, rng: random.Random, request_id: str, drain_at: float) -> None:
        cfg = self.cfg
        first, second = rng.choice(cfg.families)
        if rng.random() < 0.5:
            first, second = second, first
        estimate = TokenEstimate(rng.randint(100, 900), rng.randint(100, 600))
        candidates = (Candidate("east", (first,), estimate), Candidate("west", (second,), estimate))
        request = ReserveRequest(request_id, candidates, cfg.lease_s)
        self.report.attempts += 1
        started = time.perf_counter()
        try:
            res = await self._timed("reserve", self.ledger.reserve(request))
        except BackendUnavailable:
            self.report.errors["reserve_unavailable"] += 1
            return
        self.report.reserve_ms_paced.append((time.perf_counter() - started) * 1000)
        if isinstance(res, Denial):
            self.report.denied += 1
            return
        rid = res.reservation_id
        if not res.replayed:
            self._event("reserved", rid)
        self.report.admitted += 1
        self.report.last_lease_at = max(self.report.last_lease_at, res.lease_expires_at)
        if self._is_local(rid):
            self.report.local_reservations += 1
            self._max_local_lease_at = max(self._max_local_lease_at, res.lease_expires_at)
        await asyncio.sleep(rng.uniform(0.01, 0.15))
        roll = rng.random()
        if roll < cfg.p_abandon:
            return  # a lost agent: the sweeper abandons it when the lease runs out
        if roll < cfg.p_abandon + cfg.p_release:
            await self._outbox("release", rid, lambda: self.ledger.release(rid), drain_at)
            return
        if not await self._outbox(
            "dispatched", rid, lambda: self.ledger.ack_dispatched(rid), drain_at
        ):
            return
        output = round(estimate.max_output_tokens * rng.uniform(0.3, 1.0))
        if rng.random() < cfg.p_usage:
            delta = Usage(1, estimate.input_tokens, output // 2)
            await self._outbox("usage", rid, lambda: self.ledger.report_usage(rid, delta), drain_at)
        usage = Usage(1, estimate.input_tokens, output)
        await self._outbox("settled", rid, lambda: self.ledger.settle(rid, usage, "ok"), drain_at)

    async def _outbox(
        self, kind: str, rid: str, call: Callable[[], Awaitable[Any]], drain_at: float
    ) -> bool:
        """Call until it is answered (retrying while the hot store is down), up to drain_at."""
        while True:
            try:
                result = await self._timed(kind, call())
            except BackendUnavailable:
                self.report.errors[f"{kind}_unavailable"] += 1
                if time.time() + OUTBOX_RETRY_S >= drain_at:
                    self.report.unfinished += 1
                    return False
                await asyncio.sleep(OUTBOX_RETRY_S)
                continue
            except (FailedPrecondition, NotFound) as exc:
                # e.g. a release after the sweeper abandoned the lease: no mutation, no event
                self.report.errors[f"{kind}_{type(exc).__name__}"] += 1
                return False
            replayed = getattr(result, "replayed", False)
            if not replayed:
                self._event("released" if kind == "release" else kind, rid)
            return True

    # -- sweeping and the drain -------------------------------------------------------------

    async def sweep_leases(self, stop: asyncio.Event) -> None:
        await sweep(cast(Ledger, _RecordingSweep(self)), stop, interval_s=SWEEP_INTERVAL_S)

    async def drain_local(self, until: float) -> None:
        """Wait out local leases (the sweeper abandons them) and push the local outage journal
        back to Redis: FailoverLedger replays it before any answered Redis call."""
        ledger = self.ledger
        if not isinstance(ledger, FailoverLedger):
            return
        while time.time() < until:
            local_open = time.time() < self._max_local_lease_at + 2 * SWEEP_INTERVAL_S
            pending = await ledger.local.journal.pending()
            if not local_open and not pending:
                break
            if pending:
                with contextlib.suppress(BackendUnavailable):
                    await ledger.snapshot(self.cfg.families[0][0])
            await asyncio.sleep(0.1)
        self.report.local_unreplayed = await ledger.local.journal.pending()


class _RecordingSweep:
    """What ``sweep`` needs of a ledger, recording each lease it abandons."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica

    async def expire_due(self, limit: int = 1000) -> list[str]:
        # One sweep is many hot-store calls (a batch of leases per call, every family), each
        # under its own deadline; timing the sweep against one call's deadline would be wrong,
        # so sweeps are reported on their own (``sweep_max_ms``).
        report = self._replica.report
        started = time.perf_counter()
        try:
            done = await self._replica.ledger.expire_due(limit)
        finally:
            report.sweeps += 1
            ms = (time.perf_counter() - started) * 1000
            report.sweep_max_ms = max(report.sweep_max_ms, ms)
        for rid in done:
            self._replica._event("abandoned", rid)
        return done


async def _sleep_until(at: float) -> None:
    delay = at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def run_replica(
    cfg: ReplicaConfig,
    ledger: Ledger,
    floor: Callable[[], Awaitable[Any]],
    timeline: Timeline,
) -> ReplicaReport:
    """Run every phase on ``ledger``; returns what this replica did."""
    replica = Replica(cfg, ledger, floor)
    stop = asyncio.Event()
    sweeper = asyncio.create_task(replica.sweep_leases(stop)) if cfg.sweeper else None
    try:
        begin, end = timeline.paced(cfg)
        drain_at = end + cfg.drain_s
        await asyncio.gather(
            *(replica.paced_caller(c, begin, end, drain_at) for c in range(cfg.callers))
        )
        await replica.speed_rounds(timeline)
        await replica.drain_local(timeline.end(cfg) + cfg.drain_s)
    finally:
        stop.set()
        if sweeper is not None:
            await sweeper
    return replica.report


async def _open(cfg: ReplicaConfig) -> tuple[Ledger, Callable[[], Awaitable[Any]], Any]:
    """The ledger through ``open_ledger`` and a ``return 1`` script on a client set up alike."""
    from redis.asyncio import BlockingConnectionPool, Redis

    ledger = await open_ledger(
        cfg.redis_url,
        cfg.pools,
        replicas=cfg.replicas,
        replica_id=f"replica{cfg.index}",
        timeout_s=cfg.timeout_s,
        max_connections=cfg.max_connections,
    )
    connections = BlockingConnectionPool.from_url(
        cfg.redis_url,
        max_connections=cfg.max_connections,
        timeout=cfg.timeout_s,
        socket_timeout=cfg.timeout_s,
        socket_connect_timeout=cfg.timeout_s,
    )
    client = Redis.from_pool(connections)
    script = client.register_script("return 1")

    async def floor() -> Any:
        try:
            return await script()
        except Exception as exc:  # the ledger's own translation, for a fair comparison
            raise BackendUnavailable("redis", f"{type(exc).__name__}: {exc}") from exc

    return ledger, floor, client


def replica_process(cfg: ReplicaConfig, conn: Connection) -> None:
    """Entry point of a replica process: open, say ready, wait for the start time, run."""
    configure_logging("console", "error")

    async def main() -> ReplicaReport:
        ledger, floor, client = await _open(cfg)
        try:
            conn.send("ready")
            start = await asyncio.to_thread(conn.recv)
            return await run_replica(cfg, ledger, floor, Timeline(start))
        finally:
            await ledger.aclose()
            await client.aclose()

    conn.send(asyncio.run(main()))
    conn.close()


def merge_counters(reports: Sequence[ReplicaReport], name: str) -> dict[str, int]:
    total: Counter[str] = Counter()
    for report in reports:
        total.update(getattr(report, name))
    return dict(total)
