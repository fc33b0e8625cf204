"""AdminService: what operators see and change.

Reads need the ``read`` role, changes the ``admin`` role (``rpc/auth.py``): quota per
pool, clusters, drain / undrain, pool limits (persisted in the durable ledger, applied to the
shared hot store at once), route weights and breaker thresholds (persisted, applied here at
once and by every replica within one heartbeat, ``router.settings``), breakers, sessions,
explain (a dry-run Route) and watch (this replica's live events, ``dispatcher.watch``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping

from dispatcher import config as cfg
from dispatcher.errors import InvalidArgument, NotFound
from dispatcher.fleet.hub import Drain
from dispatcher.fleet.model import ClusterState
from dispatcher.fleet.sessions import SessionRecord
from dispatcher.ledger import PoolSnapshot
from dispatcher.ledger.admission import check_limits
from dispatcher.logs import get_logger
from dispatcher.router.settings import breaker_settings_dict
from dispatcher.routing.breaker import BreakerState, CircuitBreaker
from dispatcher.rpc import convert
from dispatcher.rpc.admin_settings import (
    breaker_settings_pb,
    checked_weights,
    known_agents,
    merged_breaker,
    weights_pb,
)
from dispatcher.rpc.auth import OperatorAuth
from dispatcher.rpc.explain import explain_call, explanation_pb
from dispatcher.rpc.handlers import Context, streaming, unary
from dispatcher.rpc.status import duration_from_seconds
from dispatcher.rpc.watch_convert import event_pb, watch_kind_of
from dispatcher.runtime import Runtime
from dispatcher.v1 import admin_pb2, admin_pb2_grpc, common_pb2, routing_pb2
from dispatcher.watch import WatchEvent, WatchKind

log = get_logger(__name__)
DEFAULT_SESSIONS, MAX_SESSIONS = 100, 1000
MAX_REASON_BYTES = 256


def quota_pb(snapshot: PoolSnapshot, spec: cfg.PoolSpec, degraded: bool) -> admin_pb2.PoolQuota:
    quota = admin_pb2.PoolQuota(
        pool_id=snapshot.pool_id,
        family=spec.quota_family,
        mode=spec.mode,
        failure_mode=spec.failure_mode,
        degraded=degraded,
    )
    for name, dim in snapshot.dims.items():
        quota.dimensions.add(
            name=name,
            limit=dim.limit,
            effective_limit=dim.effective_limit,
            used=dim.used,
            reserved=dim.reserved,
            remaining=dim.remaining - dim.debt,
            time_to_refill=duration_from_seconds(dim.refill_in),
        )
    if snapshot.blocked_until is not None and snapshot.blocked_until > snapshot.at:
        quota.blocked_until.CopyFrom(convert.timestamp_of(snapshot.blocked_until))
    if snapshot.observed_at is not None:
        quota.last_observation.CopyFrom(reading_pb(snapshot))
    return quota


def reading_pb(snapshot: PoolSnapshot) -> admin_pb2.ProviderReading:
    """What the ledger keeps of the last provider observation: when, and the limits it
    lowered (-1: the provider reported none below the configured one). Remaining counts
    are folded into the bucket, not kept apart, so they read -1."""

    def observed(dim: str) -> int:
        found = snapshot.dims.get(dim)
        return round(found.observed_limit) if found and found.observed_limit else -1

    assert snapshot.observed_at is not None
    return admin_pb2.ProviderReading(
        observed_at=convert.timestamp_of(snapshot.observed_at),
        limit_tokens=observed("tpm"),
        remaining_tokens=-1,
        limit_requests=observed("rpm"),
        remaining_requests=-1,
    )


def session_pb(record: SessionRecord) -> admin_pb2.Session:
    return admin_pb2.Session(
        session_key=record.session_key,
        cluster_id=record.cluster_id,
        boot_id=record.boot_id,
        pinned_at=convert.timestamp_of(record.pinned_at),
        last_used_at=convert.timestamp_of(record.last_used_at),
        handovers=record.handovers,
    )


BREAKER_TO_PB = {
    BreakerState.CLOSED: admin_pb2.BREAKER_STATE_CLOSED,
    BreakerState.OPEN: admin_pb2.BREAKER_STATE_OPEN,
    BreakerState.HALF_OPEN: admin_pb2.BREAKER_STATE_HALF_OPEN,
}


def breaker_pb(breaker: CircuitBreaker, now: float) -> admin_pb2.BreakerStatus:
    state = breaker.state(now)  # first: moving to HALF_OPEN resets the window
    failure_rate, slow_rate = breaker.rates()
    status = admin_pb2.BreakerStatus(
        agent_version=breaker.key,
        state=BREAKER_TO_PB[state],
        failure_rate=failure_rate,
        slow_call_rate=slow_rate,
        calls=breaker.calls,
        settings=breaker_settings_pb(breaker.key, breaker.spec),
    )
    if breaker.open_until is not None:
        status.open_until.CopyFrom(convert.timestamp_of(breaker.open_until))
    return status


def cluster_pb(state: ClusterState, now: float) -> admin_pb2.ClusterStatus:
    info, load = state.info, state.load
    status = admin_pb2.ClusterStatus(
        cluster=common_pb2.ClusterRef(id=info.id, region=info.region, endpoint=info.endpoint),
        admin_state=convert.ADMIN_TO_PB[state.admin_state],
        live=state.live,
        heartbeat_age=duration_from_seconds(max(0.0, now - state.last_seen)),
        boot_id=state.boot_id,
        slots=info.slots,
        agent_versions=info.versions,
        pool_ids=info.pool_ids,
        weight_percent=state.weight_percent or 100,
    )
    for lane in info.lanes:
        status.lanes.add(lane=convert.LANE_TO_PB[lane.lane], slots=lane.slots)
    if load is not None:
        status.in_flight = load.in_flight
        status.queue_depth = load.queue_depth
        status.cpu_utilization = load.cpu
        status.mem_utilization = load.mem
    return status


def checked_limits(limits: Mapping[str, float]) -> dict[str, float | None]:
    if not limits:
        raise InvalidArgument("limits", "name at least one dimension")
    return check_limits(limits)


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, runtime: Runtime, auth: OperatorAuth) -> None:
        self.runtime = runtime
        self.auth = auth
        self._pools = {p.id: p for p in runtime.config.pools}

    def _pool(self, pool_id: str, field: str) -> cfg.PoolSpec:
        spec = self._pools.get(pool_id)
        if spec is None:
            raise NotFound("pool", pool_id or f"(empty {field})")
        return spec

    @unary
    async def GetQuota(
        self, request: admin_pb2.GetQuotaRequest, context: Context
    ) -> admin_pb2.GetQuotaResponse:
        self.auth.require(context, "read")
        ids = list(request.pool_ids) or list(self._pools)
        specs = [self._pool(pool_id, "pool_ids") for pool_id in ids]
        degraded = bool(getattr(self.runtime.ledger, "degraded", False))
        reply = admin_pb2.GetQuotaResponse()
        for spec in specs:
            snapshot = await self.runtime.ledger.snapshot(spec.id)
            reply.pools.append(quota_pb(snapshot, spec, degraded))
        return reply

    @unary
    async def ListClusters(
        self, request: admin_pb2.ListClustersRequest, context: Context
    ) -> admin_pb2.ListClustersResponse:
        self.auth.require(context, "read")
        now = time.time()
        states = sorted(await self.runtime.registry.list(), key=lambda s: s.id)
        reply = admin_pb2.ListClustersResponse(clusters=[cluster_pb(s, now) for s in states])
        outliers = self.runtime.router.engine.outliers
        for status in reply.clusters:  # this replica's view: ejections follow its settles
            until, times = outliers.ejection(status.cluster.id, now)
            status.times_ejected = times
            if until is not None:
                status.ejected_until.CopyFrom(convert.timestamp_of(until))
        return reply

    async def _drain(self, request: admin_pb2.DrainRequest, drain: bool) -> admin_pb2.ClusterStatus:
        cluster_id = convert.required_id(request.cluster_id, "cluster_id")
        if len(request.reason.encode()) > MAX_REASON_BYTES:
            raise InvalidArgument("reason", f"longer than {MAX_REASON_BYTES} bytes")
        state = await self.runtime.registry.set_drain(cluster_id, drain, request.reason)
        # The hub reaches the cluster's stream if it is on this replica; streams on other
        # replicas see the registry's drain flag on their next heartbeat.
        self.runtime.hub.publish(cluster_id, Drain(drain, request.reason))
        verb = "drained" if drain else "undrained"
        self.runtime.router.watch.publish(
            WatchEvent(
                WatchKind.DRAIN,
                f"{cluster_id} {verb}" + (f": {request.reason}" if request.reason else ""),
                cluster_id=cluster_id,
                attributes={"drain": str(drain).lower(), "reason": request.reason},
            )
        )
        return cluster_pb(state, time.time())

    @unary
    async def Drain(
        self, request: admin_pb2.DrainRequest, context: Context
    ) -> admin_pb2.ClusterStatus:
        self.auth.require(context, "admin")
        return await self._drain(request, True)

    @unary
    async def Undrain(
        self, request: admin_pb2.DrainRequest, context: Context
    ) -> admin_pb2.ClusterStatus:
        self.auth.require(context, "admin")
        return await self._drain(request, False)

    @unary
    async def SetLimits(
        self, request: admin_pb2.SetLimitsRequest, context: Context
    ) -> admin_pb2.PoolQuota:
        operator = self.auth.require(context, "admin")
        spec = self._pool(request.pool_id, "pool_id")
        limits = checked_limits(request.limits)
        # Durable first: a limit the SQL ledger did not record would be lost on restart.
        await self.runtime.durable.set_pool_limits(spec.id, limits, updated_by=operator)
        snapshot = await self.runtime.ledger.set_limits(spec.id, limits)
        changed = ", ".join(f"{d}={v:g}" for d, v in limits.items() if v is not None)
        self.runtime.router.watch.publish(
            WatchEvent(WatchKind.LIMITS, f"{spec.id}: {changed} by {operator}", pool_id=spec.id)
        )
        degraded = bool(getattr(self.runtime.ledger, "degraded", False))
        return quota_pb(snapshot, spec, degraded)

    @unary
    async def ListBreakers(
        self, request: admin_pb2.ListBreakersRequest, context: Context
    ) -> admin_pb2.ListBreakersResponse:
        """This replica's breakers; every replica derives the same ones from the shared
        heartbeat counters."""
        self.auth.require(context, "read")
        now = time.time()
        breakers = sorted(self.runtime.router.engine.breakers, key=lambda b: b.key)
        wanted = request.agent
        return admin_pb2.ListBreakersResponse(
            breakers=[
                breaker_pb(b, now)
                for b in breakers
                if not wanted or b.key.partition("@")[0] == wanted
            ]
        )

    @unary
    async def ListSessions(
        self, request: admin_pb2.ListSessionsRequest, context: Context
    ) -> admin_pb2.ListSessionsResponse:
        """Up to ``limit`` sessions (all, or those pinned to ``cluster_id``). The session
        table is a hot-store index, not a sorted one: there are no further pages, and
        ``page_token`` is refused rather than silently ignored."""
        self.auth.require(context, "read")
        if request.page_token:
            raise InvalidArgument("page_token", "paging is not supported; raise limit (<= 1000)")
        if request.limit > MAX_SESSIONS:
            raise InvalidArgument("limit", f"must be <= {MAX_SESSIONS}")
        records = await self.runtime.sessions.sessions(
            request.cluster_id or None, request.limit or DEFAULT_SESSIONS
        )
        return admin_pb2.ListSessionsResponse(sessions=[session_pb(r) for r in records])

    @unary
    async def SetWeights(
        self, request: admin_pb2.SetWeightsRequest, context: Context
    ) -> admin_pb2.SetWeightsResponse:
        operator = self.auth.require(context, "admin")
        weights = checked_weights(self.runtime.config, request.route, request.weights)
        await self.runtime.durable.set_route_weights(request.route, weights)
        await self.runtime.sync_settings()  # here at once; other replicas within a heartbeat
        log.info("route weights set", route=request.route, weights=weights, operator=operator)
        return weights_pb(request.route, self.runtime.router.engine.config.routes[request.route])

    @unary
    async def SetBreaker(
        self, request: admin_pb2.SetBreakerRequest, context: Context
    ) -> admin_pb2.BreakerSettings:
        operator = self.auth.require(context, "admin")
        agent = convert.required_id(request.settings.agent, "settings.agent")
        engine = self.runtime.router.engine
        seen = {b.key for b in engine.breakers}
        seen |= {v for t in engine.targets.values() for v in t.candidate.versions}
        if agent not in known_agents(self.runtime.config, seen):
            raise NotFound("agent", agent)
        spec = merged_breaker(engine.config.agent_spec(agent).breaker, request.settings)
        await self.runtime.durable.set_breaker_settings(agent, breaker_settings_dict(spec))
        await self.runtime.sync_settings()
        log.info("breaker thresholds set", agent=agent, operator=operator)
        return breaker_settings_pb(agent, spec)

    @unary
    async def Explain(
        self, request: routing_pb2.RouteRequest, context: Context
    ) -> admin_pb2.Explanation:
        self.auth.require(context, "read")
        router = self.runtime.router
        decision = await router.decide(explain_call(request), explain=True)
        return explanation_pb(router, decision)

    @streaming
    async def Watch(
        self, request: admin_pb2.WatchRequest, context: Context
    ) -> AsyncIterator[admin_pb2.Event]:
        """This replica's live events (``dispatcher.watch``) until the caller leaves."""
        self.auth.require(context, "read")
        kinds = frozenset(watch_kind_of(t, f"types[{i}]") for i, t in enumerate(request.types))
        async with self.runtime.router.watch.watch(kinds) as watcher:
            async for event in watcher.events():
                yield event_pb(event)
