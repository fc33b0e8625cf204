"""Servicers for the four dispatcher.v1 services.

This is the translation layer between protobuf and the domain (DESIGN §4): nothing below
``rpc/`` imports protobuf or grpc. Capabilities that are not built yet answer UNIMPLEMENTED
with a message naming them, so a client can tell "not here yet" from "broken".
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from dispatcher.errors import NotBuilt
from dispatcher.rpc.handlers import Context, streaming, unary
from dispatcher.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    agent_pb2,
    agent_pb2_grpc,
    result_pb2,
    result_pb2_grpc,
    routing_pb2,
    routing_pb2_grpc,
)

ROUTING = "routing engine"
LEDGER = "quota ledger"
HEARTBEATS = "heartbeat stream"
ADMIN = "admin API"
RELAY = "result relay"


class RoutingServicer(routing_pb2_grpc.RoutingServiceServicer):
    @unary
    async def Route(
        self, request: routing_pb2.RouteRequest, context: Context
    ) -> routing_pb2.RouteDecision:
        raise NotBuilt(f"RoutingService.Route ({ROUTING})")

    @unary
    async def Settle(
        self, request: routing_pb2.SettleRequest, context: Context
    ) -> routing_pb2.SettleResponse:
        raise NotBuilt(f"RoutingService.Settle ({LEDGER})")

    @unary
    async def Release(
        self, request: routing_pb2.ReleaseRequest, context: Context
    ) -> routing_pb2.ReleaseResponse:
        raise NotBuilt(f"RoutingService.Release ({LEDGER})")

    @unary
    async def Extend(
        self, request: routing_pb2.ExtendRequest, context: Context
    ) -> routing_pb2.ExtendResponse:
        raise NotBuilt(f"RoutingService.Extend ({LEDGER})")


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    @streaming
    async def Connect(
        self, request_iterator: AsyncIterator[agent_pb2.AgentReport], context: Context
    ) -> AsyncIterator[agent_pb2.Directive]:
        raise NotBuilt(f"AgentService.Connect ({HEARTBEATS})")
        yield  # pragma: no cover - makes this an async generator


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    @unary
    async def GetQuota(
        self, request: admin_pb2.GetQuotaRequest, context: Context
    ) -> admin_pb2.GetQuotaResponse:
        raise NotBuilt(f"AdminService.GetQuota ({ADMIN})")

    @unary
    async def ListClusters(
        self, request: admin_pb2.ListClustersRequest, context: Context
    ) -> admin_pb2.ListClustersResponse:
        raise NotBuilt(f"AdminService.ListClusters ({ADMIN})")

    @unary
    async def ListBreakers(
        self, request: admin_pb2.ListBreakersRequest, context: Context
    ) -> admin_pb2.ListBreakersResponse:
        raise NotBuilt(f"AdminService.ListBreakers ({ADMIN})")

    @unary
    async def ListSessions(
        self, request: admin_pb2.ListSessionsRequest, context: Context
    ) -> admin_pb2.ListSessionsResponse:
        raise NotBuilt(f"AdminService.ListSessions ({ADMIN})")

    @unary
    async def SetLimits(
        self, request: admin_pb2.SetLimitsRequest, context: Context
    ) -> admin_pb2.PoolQuota:
        raise NotBuilt(f"AdminService.SetLimits ({ADMIN})")

    @unary
    async def SetWeights(
        self, request: admin_pb2.SetWeightsRequest, context: Context
    ) -> admin_pb2.SetWeightsResponse:
        raise NotBuilt(f"AdminService.SetWeights ({ADMIN})")

    @unary
    async def SetBreaker(
        self, request: admin_pb2.SetBreakerRequest, context: Context
    ) -> admin_pb2.BreakerSettings:
        raise NotBuilt(f"AdminService.SetBreaker ({ADMIN})")

    @unary
    async def Drain(
        self, request: admin_pb2.DrainRequest, context: Context
    ) -> admin_pb2.ClusterStatus:
        raise NotBuilt(f"AdminService.Drain ({ADMIN})")

    @unary
    async def Undrain(
        self, request: admin_pb2.DrainRequest, context: Context
    ) -> admin_pb2.ClusterStatus:
        raise NotBuilt(f"AdminService.Undrain ({ADMIN})")

    @unary
    async def Explain(
        self, request: routing_pb2.RouteRequest, context: Context
    ) -> admin_pb2.Explanation:
        raise NotBuilt(f"AdminService.Explain ({ROUTING})")

    @streaming
    async def Watch(
        self, request: admin_pb2.WatchRequest, context: Context
    ) -> AsyncIterator[admin_pb2.Event]:
        raise NotBuilt(f"AdminService.Watch ({ADMIN})")
        yield  # pragma: no cover - makes this an async generator


class ResultServicer(result_pb2_grpc.ResultServiceServicer):
    @unary
    async def Publish(
        self, request: result_pb2.PublishRequest, context: Context
    ) -> result_pb2.PublishResponse:
        raise NotBuilt(f"ResultService.Publish ({RELAY})")

    @streaming
    async def AwaitResult(
        self, request: result_pb2.AwaitResultRequest, context: Context
    ) -> AsyncIterator[result_pb2.ResultEvent]:
        raise NotBuilt(f"ResultService.AwaitResult ({RELAY})")
        yield  # pragma: no cover - makes this an async generator
