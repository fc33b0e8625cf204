"""AgentService.Connect over a real socket: acks, rejections, auth, usage, directives."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import grpc
import pytest
import redis.asyncio as redis_asyncio

from dispatcher.fleet.hub import ConfigChange, Drain
from dispatcher.fleet.memory import MemoryClusterRegistry
from dispatcher.fleet.model import UsageReport
from dispatcher.fleet.redis_registry import RedisClusterRegistry
from dispatcher.fleet.registry import RegistrySettings
from dispatcher.rpc.agent_service import AgentServicer
from dispatcher.v1 import agent_pb2, agent_pb2_grpc, common_pb2
from tests.agent.conftest import (
    AgentServer,
    announce_report,
    bearer,
    load_report,
    start_agent_server,
)

Stub = agent_pb2_grpc.AgentServiceStub
Call = grpc.aio.StreamStreamCall[agent_pb2.AgentReport, agent_pb2.Directive]


async def exchange(call: Call, report: agent_pb2.AgentReport) -> agent_pb2.Ack:
    await call.write(report)
    directive = await asyncio.wait_for(call.read(), 5)
    assert isinstance(directive, agent_pb2.Directive)
    assert directive.WhichOneof("kind") == "ack", directive
    return directive.ack


async def next_directive(call: Call) -> agent_pb2.Directive:
    directive = await asyncio.wait_for(call.read(), 5)
    assert isinstance(directive, agent_pb2.Directive)
    return directive


async def test_every_report_is_acked_with_its_seq(stub: Stub, agent_server: AgentServer) -> None:
    call = stub.Connect(metadata=bearer("c1"))
    assert await exchange(call, announce_report(seq=1)) == agent_pb2.Ack(seq=1)
    assert await exchange(call, load_report(seq=2)) == agent_pb2.Ack(seq=2)
    await call.done_writing()
    assert await call.code() == grpc.StatusCode.OK
    state = await agent_server.servicer.registry.get("c1")
    assert state.info.slots == 8
    assert state.load is not None
    assert state.load.cpu == 0.5


async def test_first_report_must_announce_and_the_stream_survives(stub: Stub) -> None:
    call = stub.Connect(metadata=bearer("c1"))
    ack = await exchange(call, load_report(seq=1))
    assert ack.rejected_reason.startswith("announce:")
    assert (await exchange(call, announce_report(seq=2))).rejected_reason == ""


async def test_a_nan_cpu_is_rejected_and_counted_and_the_stream_survives(
    stub: Stub, agent_server: AgentServer
) -> None:
    call = stub.Connect(metadata=bearer("c1"))
    await exchange(call, announce_report())
    ack = await exchange(call, load_report(seq=2, cpu=math.nan))
    assert ack.seq == 2
    assert ack.rejected_reason.startswith("load.cpu_utilization:")
    assert agent_server.servicer.rejections["load.cpu_utilization"] == 1
    assert (await exchange(call, load_report(seq=3))).rejected_reason == ""


async def test_another_clusters_token_is_permission_denied(stub: Stub) -> None:
    call = stub.Connect(metadata=bearer("c2"))
    await call.write(announce_report("c1"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer wrong"),)])
async def test_no_or_unknown_token_is_unauthenticated(
    stub: Stub, metadata: tuple[tuple[str, str], ...]
) -> None:
    call = stub.Connect(metadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_usage_reports_come_back_durable_from_the_callback() -> None:
    seen: list[tuple[str, list[str]]] = []

    async def settle_even(cluster_id: str, reports: Sequence[UsageReport]) -> list[str]:
        seen.append((cluster_id, [r.report_id for r in reports]))
        return [r.report_id for r in reports if int(r.report_id) % 2 == 0]

    registry = MemoryClusterRegistry(RegistrySettings(min_report_gap=0))
    server = await start_agent_server(AgentServicer(registry, on_usage=settle_even))
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            call = Stub(channel).Connect()
            report = announce_report()
            for rid in ("1", "2"):
                report.usage.add(
                    report_id=rid,
                    reservation_id=f"res-{rid}",
                    usage=common_pb2.Usage(requests=1, input_tokens=10),
                    final=True,
                    outcome=common_pb2.TASK_OUTCOME_SUCCESS,
                )
            ack = await exchange(call, report)
    finally:
        await server.stop()
    assert list(ack.durable_report_ids) == ["2"]
    assert seen == [("c1", ["1", "2"])]


async def test_hub_directives_reach_the_connected_stream(
    stub: Stub, agent_server: AgentServer
) -> None:
    call = stub.Connect(metadata=bearer("c1"))
    await exchange(call, announce_report())
    hub = agent_server.servicer.hub
    assert hub.publish("c1", Drain(True, "kernel upgrade")) == 1
    drain = await next_directive(call)
    assert drain.drain == agent_pb2.DrainDirective(drain=True, reason="kernel upgrade")
    assert hub.publish("c1", ConfigChange(report_interval=2.5, weight_percent=50)) == 1
    config = (await next_directive(call)).config
    assert config.report_interval.ToTimedelta().total_seconds() == 2.5
    assert config.weight_percent == 50


async def test_a_drain_set_on_another_replica_arrives_with_the_next_heartbeat(
    stub: Stub, agent_server: AgentServer
) -> None:
    call = stub.Connect(metadata=bearer("c1"))
    await exchange(call, announce_report())
    await agent_server.servicer.registry.set_drain("c1", True, "by operator")
    await exchange(call, load_report(seq=2))
    assert (await next_directive(call)).drain.reason == "by operator"
    await agent_server.servicer.registry.set_drain("c1", False)
    await exchange(call, load_report(seq=3))
    assert (await next_directive(call)).drain == agent_pb2.DrainDirective(drain=False)


async def test_close_streams_ends_open_streams_cleanly(
    stub: Stub, agent_server: AgentServer
) -> None:
    call = stub.Connect(metadata=bearer("c1"))
    await exchange(call, announce_report())
    agent_server.servicer.close_streams()
    assert await asyncio.wait_for(call.read(), 5) == grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


@pytest.mark.redis
async def test_connect_over_the_redis_registry(redis_db: str) -> None:
    client = redis_asyncio.Redis.from_url(redis_db)
    registry = RedisClusterRegistry(client, RegistrySettings(min_report_gap=0))
    server = await start_agent_server(AgentServicer(registry))
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            call = Stub(channel).Connect()
            await exchange(call, announce_report())
            assert (await exchange(call, load_report(cpu=2.0))).rejected_reason
            assert (await exchange(call, load_report(seq=3))).rejected_reason == ""
        assert (await registry.get("c1")).load is not None
    finally:
        await server.stop()
        await registry.aclose()
        await client.aclose()


@pytest.mark.parametrize(("theirs", "pushed"), [(5.0, True), (2.0, False), (None, False)])
async def test_an_announce_at_another_interval_is_answered_with_ours(
    theirs: float | None, pushed: bool
) -> None:
    """Staleness and the flood rule are judged on the dispatcher's interval; an agent that
    says it reports at another one is told ours. An agent that does not say is left alone."""
    registry = MemoryClusterRegistry(RegistrySettings(interval=2.0, min_report_gap=0))
    running = await start_agent_server(AgentServicer(registry, report_interval=2.0))
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            call = agent_pb2_grpc.AgentServiceStub(channel).Connect()
            report = announce_report("c1")
            if theirs is not None:
                report.announce.report_interval.FromSeconds(int(theirs))
            assert (await exchange(call, report)).seq == 1
            await call.write(load_report("c1", seq=2))
            following = await next_directive(call)
            await call.done_writing()
    finally:
        await running.stop()
    if pushed:
        assert following.config.report_interval.ToTimedelta().total_seconds() == 2.0
    else:
        assert following.ack.seq == 2
