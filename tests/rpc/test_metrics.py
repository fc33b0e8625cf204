"""Prometheus metrics over HTTP from a running server."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.metrics import Metrics
from dispatcher.rpc import handlers
from dispatcher.server import DispatcherServer
from dispatcher.v1 import routing_pb2, routing_pb2_grpc
from tests.rpc.conftest import embedded_config
from tests.rpc.route_helpers import (
    BIG_POOL,
    FakeAgent,
    route_error,
    route_request,
    routing,
    running,
)


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        body = reply.read().decode()
    return {
        family.name: [(sample.labels, sample.value) for sample in family.samples]
        for family in text_string_to_metric_families(body)
    }


def test_each_decision_is_counted_under_its_own_labels() -> None:
    metrics = Metrics()
    for _ in range(2):
        metrics.count_decision("ROUTED", "eu-1", "gpt-4o")
    metrics.count_decision("FALLBACK", "eu-1", "gpt-4o")
    counted = {
        (s.labels["outcome"], s.labels["cluster"], s.labels["backend"]): s.value
        for family in metrics.registry.collect()
        if family.name == "dispatcher_decisions"
        for s in family.samples
        if s.name == "dispatcher_decisions_total"
    }
    assert counted == {("ROUTED", "eu-1", "gpt-4o"): 2.0, ("FALLBACK", "eu-1", "gpt-4o"): 1.0}


async def test_pool_remaining_and_journal_lag_are_exported(tmp_path: Path) -> None:
    config = embedded_config(
        tmp_path,
        pools=[{"id": "openai/org-x", "tpm": 100_000}],
        **{"server.metrics_listen": "127.0.0.1:0"},
    )
    server = DispatcherServer(config)
    await server.start()
    try:
        assert server.metrics_port is not None
        # Refresh now rather than waiting for the background loop's next turn.
        await server.runtime.metrics.refresh(server.runtime)
        families = await asyncio.to_thread(scrape, server.metrics_port)
        remaining = {
            labels["dim"]: value
            for labels, value in families["dispatcher_pool_remaining"]
            if labels["pool"] == "openai/org-x"
        }
        assert remaining["tpm"] == 90_000  # limit x the default safety factor 0.9
        assert families["dispatcher_journal_pending"] == [({}, 0.0)]
        assert "dispatcher_decisions" in families
    finally:
        await server.stop(grace=0)


def rpc_counts(port: int) -> dict[str, float]:
    """``method/code`` -> calls the RPC latency histogram counted."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        body = reply.read().decode()
    return {
        f"{sample.labels['method']}/{sample.labels['code']}": sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "dispatcher_rpc_seconds_count"
    }


async def test_every_routing_call_is_timed_by_method_and_status_code(tmp_path: Path) -> None:
    pool = "openai/org-x"
    async with (
        running(
            tmp_path,
            pools=[{"id": pool, **BIG_POOL}],
            routes={"chat-default": {"backends": [{"name": "gpt-4o", "weight": 100}]}},
            **{"server.metrics_listen": "127.0.0.1:0"},
        ) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        await FakeAgent(channel, "c1", pool_ids=[pool]).connect()
        await server.runtime.router.refresh()
        stub = routing(channel)
        decision = await stub.Route(route_request("req-1"))
        await stub.Release(routing_pb2.ReleaseRequest(reservation_id=decision.reservation_id))
        await route_error(stub, route_request(""))  # no request id: INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Release(routing_pb2.ReleaseRequest(reservation_id="openai#" + "0" * 32))
        assert server.metrics_port is not None
        counts = await asyncio.to_thread(rpc_counts, server.metrics_port)
    assert counts == {
        "Route/OK": 1.0,
        "Release/OK": 1.0,
        "Route/INVALID_ARGUMENT": 1.0,
        "Release/NOT_FOUND": 1.0,
    }


class TimedRouting(routing_pb2_grpc.RoutingServiceServicer):
    """Route aborts by itself; Release waits until its caller gives up. Timed like the
    dispatcher's servicer."""

    def __init__(self) -> None:
        self.observed: list[tuple[str, str]] = []
        self.any_observed = asyncio.Event()

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        assert seconds >= 0
        self.observed.append((method, code))
        self.any_observed.set()

    @handlers.unary
    async def Route(
        self, request: routing_pb2.RouteRequest, context: handlers.Context
    ) -> routing_pb2.RouteDecision:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "full")
        raise AssertionError("abort raises")

    @handlers.unary
    async def Release(
        self, request: routing_pb2.ReleaseRequest, context: handlers.Context
    ) -> routing_pb2.ReleaseResponse:
        await asyncio.Event().wait()  # never set: only the caller's deadline ends this call
        raise AssertionError("unreachable")


@asynccontextmanager
async def timed_server() -> AsyncIterator[tuple[TimedRouting, routing_pb2_grpc.RoutingServiceStub]]:
    servicer, server = TimedRouting(), grpc.aio.server()
    routing_pb2_grpc.add_RoutingServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield servicer, routing_pb2_grpc.RoutingServiceStub(channel)
    finally:
        await server.stop(0)


async def test_a_call_its_handler_aborted_is_counted_under_the_code_it_set() -> None:
    async with timed_server() as (servicer, stub):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Route(routing_pb2.RouteRequest())
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert servicer.observed == [("Route", "RESOURCE_EXHAUSTED")]


async def test_a_call_whose_caller_gave_up_is_counted_as_cancelled() -> None:
    async with timed_server() as (servicer, stub):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Release(routing_pb2.ReleaseRequest(), timeout=0.2)
        async with asyncio.timeout(10):
            await servicer.any_observed.wait()
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert servicer.observed == [("Release", "CANCELLED")]
