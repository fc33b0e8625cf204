"""SDK fixtures: a scripted RoutingService on a free port, and a sleep that only records.

Route/Settle/Release/Extend are not built on the real server yet, so the SDK's retry logic is
pinned against this tiny servicer: each call pops the next scripted answer (a response, or a
status with an optional RetryInfo delay) and records the request.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from dispatcher.client import DispatcherClient, RetryPolicy
from dispatcher.rpc.status import duration_from_seconds
from dispatcher.v1 import routing_pb2, routing_pb2_grpc


@dataclass(frozen=True)
class Fail:
    code: grpc.StatusCode
    retry_after: float | None = None


def status_of(fail: Fail) -> grpc.Status:
    status = status_pb2.Status(code=fail.code.value[0], message=f"scripted {fail.code.name}")
    if fail.retry_after is not None:
        info = error_details_pb2.RetryInfo(retry_delay=duration_from_seconds(fail.retry_after))
        status.details.add().Pack(info)
    result: grpc.Status = rpc_status.to_status(status)
    return result


class ScriptedRouting(routing_pb2_grpc.RoutingServiceServicer):
    def __init__(self) -> None:
        self.script: dict[str, list[Message | Fail]] = defaultdict(list)
        self.calls: dict[str, list[Any]] = defaultdict(list)

    async def _answer(self, method: str, request: Any, context: Any, default: Message) -> Any:
        self.calls[method].append(request)
        answer = self.script[method].pop(0) if self.script[method] else default
        if isinstance(answer, Fail):
            await context.abort_with_status(status_of(answer))
        return answer

    async def Route(self, request: Any, context: Any) -> Any:
        decision = routing_pb2.RouteDecision(
            outcome=routing_pb2.ROUTE_OUTCOME_ROUTED,
            request_id=request.request_id,
            reservation_id="res-1",
            task_id="task-1",
            result_token="token-1",
        )
        return await self._answer("Route", request, context, decision)

    async def Settle(self, request: Any, context: Any) -> Any:
        return await self._answer("Settle", request, context, routing_pb2.SettleResponse())

    async def Release(self, request: Any, context: Any) -> Any:
        return await self._answer("Release", request, context, routing_pb2.ReleaseResponse())

    async def Extend(self, request: Any, context: Any) -> Any:
        return await self._answer("Extend", request, context, routing_pb2.ExtendResponse())


class RecordedSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
async def routing() -> AsyncIterator[tuple[ScriptedRouting, str]]:
    server = grpc.aio.server()
    servicer = ScriptedRouting()
    routing_pb2_grpc.add_RoutingServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


@pytest.fixture
def sleep() -> RecordedSleep:
    return RecordedSleep()


@pytest.fixture
async def client(
    routing: tuple[ScriptedRouting, str], sleep: RecordedSleep
) -> AsyncIterator[DispatcherClient]:
    policy = RetryPolicy(max_attempts=4, initial_backoff=0.1, max_backoff=1.0)
    async with DispatcherClient(routing[1], retry=policy, sleep=sleep) as sdk:
        yield sdk


@pytest.fixture
def servicer(routing: tuple[ScriptedRouting, str]) -> ScriptedRouting:
    return routing[0]
