"""The demo's callers: Poisson arrivals calling Route over gRPC, some in sticky sessions."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from dispatcher.demo.clusters import SimCluster
from dispatcher.demo.quota_check import QuotaCheck
from dispatcher.demo.scenario import AGENT, ESTIMATE_TOKENS, ROUTE
from dispatcher.v1 import common_pb2, routing_pb2, routing_pb2_grpc

SESSIONS = 12
LEASE_S = 60
SESSION_SHARE = 0.3
OUTCOME_NAMES = {
    routing_pb2.ROUTE_OUTCOME_ROUTED: "routed",
    routing_pb2.ROUTE_OUTCOME_FALLBACK: "fallback",
    routing_pb2.ROUTE_OUTCOME_MAINTENANCE: "maintenance",
}


@dataclass
class LoadStats:
    outcomes: Counter[str] = field(default_factory=Counter)
    per_cluster: Counter[str] = field(default_factory=Counter)
    spillovers: int = 0
    handovers: int = 0
    refused: int = 0  # RESOURCE_EXHAUSTED: no capacity anywhere, the caller retries later
    errors: list[str] = field(default_factory=list)
    recent: list[str] = field(default_factory=list)

    @property
    def decisions(self) -> int:
        return sum(self.outcomes.values())

    def note(self, line: str) -> None:
        self.recent.append(line)
        del self.recent[:-8]


class LoadGenerator:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        clusters: Mapping[str, SimCluster],
        rate: float,
        rng: random.Random,
        check: QuotaCheck,
    ) -> None:
        self.stub: Any = routing_pb2_grpc.RoutingServiceStub(channel)
        self.clusters = clusters
        self.rate = rate
        self.rng = rng
        self.check = check
        self.stats = LoadStats()
        self._calls: set[asyncio.Task[None]] = set()
        self._n = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.rng.expovariate(self.rate))
            except TimeoutError:
                self._n += 1
                call = asyncio.create_task(self._route(self._n))
                self._calls.add(call)
                call.add_done_callback(self._calls.discard)
        await asyncio.gather(*self._calls, return_exceptions=True)

    def _request(self, n: int) -> routing_pb2.RouteRequest:
        session = ""
        if self.rng.random() < SESSION_SHARE:
            session = f"conversation-{self.rng.randrange(SESSIONS)}"
        return routing_pb2.RouteRequest(
            request_id=f"demo-{n}",
            route=ROUTE,
            agent=AGENT,
            session_key=session,
            estimate=common_pb2.TokenEstimate(
                input_tokens=ESTIMATE_TOKENS[0], max_output_tokens=ESTIMATE_TOKENS[1]
            ),
            lease=Duration(seconds=LEASE_S),
        )

    async def _route(self, n: int) -> None:
        try:
            decision = await self.stub.Route(self._request(n), timeout=5.0)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                self.stats.refused += 1
            else:
                self.stats.errors.append(f"route: {exc.code().name}: {exc.details()}")
            return
        self._record(decision)
        cluster = self.clusters.get(decision.cluster.id)
        if cluster is not None:
            cluster.run(decision)

    def _record(self, decision: routing_pb2.RouteDecision) -> None:
        stats = self.stats
        stats.outcomes[OUTCOME_NAMES.get(decision.outcome, "other")] += 1
        if decision.cluster.id:
            stats.per_cluster[decision.cluster.id] += 1
        # The server's admission time: the lease started then.
        admitted_at = decision.lease_expires_at.ToNanoseconds() / 1e9 - LEASE_S
        for charge in decision.reserved:
            self.check.admit(charge.pool_id, admitted_at, charge.cost.tokens)
        if decision.spilled_from:
            stats.spillovers += 1
            stats.note(f"spillover: {decision.spilled_from} full, routed to {decision.cluster.id}")
        if decision.handover_from:
            stats.handovers += 1
            stats.note(f"handover: {decision.handover_from} -> {decision.cluster.id}")
        if decision.outcome == routing_pb2.ROUTE_OUTCOME_FALLBACK:
            stats.note(f"fallback: {decision.agent_version} on {decision.cluster.id}")
