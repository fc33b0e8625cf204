"""A typed client for ``grpc.health.v1.Health/Check``, shared by the CLIs and tests.

The published stubs for grpc_health's ``HealthStub`` declare no methods, so the call is made
through a typed multi-callable instead of the generated stub.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2

CHECK_METHOD = "/grpc.health.v1.Health/Check"
Status = health_pb2.HealthCheckResponse.ServingStatus


async def check_health(channel: grpc.aio.Channel, service: str = "", timeout: float = 5.0) -> str:
    """The serving status name ("SERVING", "NOT_SERVING", ...) of ``service`` ("" = server)."""
    check = channel.unary_unary(
        CHECK_METHOD,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    reply: health_pb2.HealthCheckResponse = await check(
        health_pb2.HealthCheckRequest(service=service), timeout=timeout
    )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
