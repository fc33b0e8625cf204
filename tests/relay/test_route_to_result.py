"""The whole relay path on the real server: Route hands out a task id and a result token, the
worker publishes to that task, and only the holder of the token reads the result."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import grpc
import pytest
from websockets.asyncio.client import connect

from dispatcher.relay.memory import MemoryResultStore
from dispatcher.relay.routed import RoutedResultStore
from dispatcher.relay.tokens import TaskTokens
from dispatcher.rpc.result_service import ResultServicer
from dispatcher.server import DispatcherServer
from dispatcher.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    common_pb2,
    result_pb2,
    result_pb2_grpc,
    routing_pb2,
    routing_pb2_grpc,
)
from tests.rpc.conftest import embedded_config, running

POOL = "openai/org-x"

pytestmark = pytest.mark.parametrize(
    "hot_store", ["memory", pytest.param("redis", marks=pytest.mark.redis)]
)


def announce() -> agent_pb2.AgentReport:
    return agent_pb2.AgentReport(
        seq=1,
        cluster_id="c1",
        boot_id="boot-a",
        announce=agent_pb2.ClusterAnnouncement(
            region="westeurope",
            endpoint="c1.example:443",
            slots=8,
            agent_versions=["auditor@16.4"],
            backends=["gpt-4o"],
            pool_ids=[POOL],
        ),
        load=agent_pb2.LoadReport(in_flight=0),
    )


@pytest.fixture
async def server(
    tmp_path: Path, hot_store: str, request: pytest.FixtureRequest
) -> AsyncIterator[DispatcherServer]:
    overrides: dict[str, object] = {
        "pools": [{"id": POOL, "tpm": 1_000_000, "rpm": 10_000}],
        "routes": {"chat-default": {"backends": [{"name": "gpt-4o", "weight": 100}]}},
        "relay.keepalive_interval": "50ms",
        "relay.gateway_with_server": True,
        "relay.gateway_listen": "127.0.0.1:0",
    }
    if hot_store == "redis":
        overrides["hot_store.url"] = request.getfixturevalue("redis_db")
    async with running(embedded_config(tmp_path, **overrides)) as server:
        yield server


@pytest.fixture
async def channel(server: DispatcherServer) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to a server that knows one live cluster (its agent's stream stays open)."""
    async with grpc.aio.insecure_channel(server.address) as chan:
        stream = agent_pb2_grpc.AgentServiceStub(chan).Connect()
        await stream.write(announce())
        await stream.read()  # the ack: the cluster is in the registry
        await server.runtime.router.refresh()  # what the refresh loop does on its timer
        yield chan
        await stream.done_writing()


async def route(channel: grpc.aio.Channel, request_id: str) -> routing_pb2.RouteDecision:
    return await routing_pb2_grpc.RoutingServiceStub(channel).Route(
        routing_pb2.RouteRequest(
            request_id=request_id,
            route="chat-default",
            agent="auditor",
            estimate=common_pb2.TokenEstimate(input_tokens=100, max_output_tokens=100),
        )
    )


async def publish_final(
    channel: grpc.aio.Channel, task_id: str, payload: bytes, content_type: str
) -> None:
    """What a worker does when its task is done."""
    await result_pb2_grpc.ResultServiceStub(channel).Publish(
        result_pb2.PublishRequest(
            task_id=task_id,
            kind=result_pb2.RESULT_EVENT_KIND_FINAL,
            payload=payload,
            content_type=content_type,
            sequence=1,
        )
    )


async def test_a_routed_task_gets_its_result_through_the_relay(
    channel: grpc.aio.Channel,
) -> None:
    decision = await route(channel, "req-1")
    assert decision.task_id == decision.reservation_id
    assert decision.result_token
    # Published before the caller asks: kept, then delivered.
    await publish_final(channel, decision.task_id, b'{"answer": 42}', "application/json")
    results = result_pb2_grpc.ResultServiceStub(channel)
    events = [
        event
        async for event in results.AwaitResult(
            result_pb2.AwaitResultRequest(
                task_id=decision.task_id, result_token=decision.result_token
            )
        )
    ]
    assert [(e.kind, e.payload) for e in events] == [
        (result_pb2.RESULT_EVENT_KIND_FINAL, b'{"answer": 42}')
    ]


async def test_a_retried_route_returns_the_same_task_and_token(
    channel: grpc.aio.Channel,
) -> None:
    first, again = await route(channel, "req-2"), await route(channel, "req-2")
    assert (again.task_id, again.result_token) == (first.task_id, first.result_token)
    other = await route(channel, "req-3")
    assert other.result_token != first.result_token


async def test_another_tasks_token_is_refused(channel: grpc.aio.Channel) -> None:
    mine, theirs = await route(channel, "req-4"), await route(channel, "req-5")
    stream = result_pb2_grpc.ResultServiceStub(channel).AwaitResult(
        result_pb2.AwaitResultRequest(task_id=mine.task_id, result_token=theirs.result_token)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_gateway_inside_serve_relays_a_routed_tasks_result(
    server: DispatcherServer, channel: grpc.aio.Channel
) -> None:
    decision = await route(channel, "req-6")
    await publish_final(channel, decision.task_id, b"done", "text/plain")
    assert server.gateway is not None
    task = quote(decision.task_id, safe="")
    url = f"ws://127.0.0.1:{server.gateway.port}/v1/tasks/{task}/events"
    headers = {"Authorization": f"Bearer {decision.result_token}"}
    async with connect(url, additional_headers=headers) as ws:
        frame = json.loads(await ws.recv())
    assert (frame["kind"], frame["payload"]) == ("final", "done")


async def test_a_routed_tasks_stream_opens_on_first_use_with_its_derived_token(
    hot_store: str,
) -> None:
    """Route writes nothing for a task's result stream: the worker's Publish or the caller's
    AwaitResult opens it, since the token derives from the task id. A token that is not the
    task's is refused without saying whether the task exists."""
    tokens = TaskTokens(b"0123456789abcdef0123456789abcdef")
    server = grpc.aio.server()
    store = RoutedResultStore(MemoryResultStore(), tokens)
    servicer = ResultServicer(store, keepalive_interval=0.05)
    result_pb2_grpc.add_ResultServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            results = result_pb2_grpc.ResultServiceStub(channel)
            wrong = results.AwaitResult(
                result_pb2.AwaitResultRequest(task_id="never-opened", result_token="guess")
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await wrong.read()
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            await publish_final(channel, "published-first", b"done", "text/plain")
            awaited = results.AwaitResult(
                result_pb2.AwaitResultRequest(
                    task_id="awaited-first", result_token=tokens.of("awaited-first")
                )
            )
            keepalive = await awaited.read()  # the stream exists now, and waits
            assert keepalive.kind == result_pb2.RESULT_EVENT_KIND_KEEPALIVE
            awaited.cancel()
            events = [
                e
                async for e in results.AwaitResult(
                    result_pb2.AwaitResultRequest(
                        task_id="published-first", result_token=tokens.of("published-first")
                    )
                )
            ]
            assert [e.payload for e in events] == [b"done"]
    finally:
        await server.stop(None)
