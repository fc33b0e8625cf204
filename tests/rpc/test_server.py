"""The server's surface over a real socket: health, reflection, lifecycle."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from dispatcher.errors import FailedPrecondition
from dispatcher.ledger.fallback import FailoverLedger
from dispatcher.ledger.redis_backend import RedisLedger
from dispatcher.rpc.health_client import check_health
from dispatcher.server import SERVICE_NAMES, DispatcherServer
from tests.rpc.conftest import embedded_config

EXPECTED_SERVICES = {
    "dispatcher.v1.RoutingService",
    "dispatcher.v1.AgentService",
    "dispatcher.v1.AdminService",
    "dispatcher.v1.ResultService",
}


async def test_every_service_reports_serving(channel: grpc.aio.Channel) -> None:
    for name in ("", *SERVICE_NAMES):
        assert await check_health(channel, name) == "SERVING", name


async def test_health_of_an_unknown_service_is_not_found(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await check_health(channel, "dispatcher.v1.NoSuchService")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_four_dispatcher_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    names: set[str] = set()
    async for reply in stub.ServerReflectionInfo(iter([request])):
        names.update(s.name for s in reply.list_services_response.service)
    assert names >= EXPECTED_SERVICES
    assert "grpc.health.v1.Health" in names


async def test_reflection_serves_file_descriptors(channel: grpc.aio.Channel) -> None:
    """grpcurl needs the descriptors, not just the names."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="dispatcher.v1.RoutingService"
    )
    replies = [reply async for reply in stub.ServerReflectionInfo(iter([request]))]
    protos = replies[0].file_descriptor_response.file_descriptor_proto
    assert protos, replies[0]


async def test_stop_marks_not_serving_before_closing(tmp_path: Path) -> None:
    server = DispatcherServer(embedded_config(tmp_path))
    await server.start()
    async with grpc.aio.insecure_channel(server.address) as chan:
        assert await check_health(chan, "") == "SERVING"
        await server.stop(grace=0)
        with pytest.raises(grpc.aio.AioRpcError):
            await check_health(chan, "", timeout=1.0)


@pytest.mark.redis
@pytest.mark.postgres
async def test_serves_on_real_redis_and_postgres(
    tmp_path: Path, redis_db: str, migrated_pg_url: str
) -> None:
    config = embedded_config(
        tmp_path, **{"hot_store.url": redis_db, "durable.database_url": migrated_pg_url}
    )
    server = DispatcherServer(config)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as chan:
            assert await check_health(chan, "") == "SERVING"
    finally:
        await server.stop(grace=0)


@pytest.mark.redis
async def test_the_configured_call_timeout_and_replica_count_reach_the_ledger(
    tmp_path: Path, redis_db: str
) -> None:
    config = embedded_config(
        tmp_path,
        **{"hot_store.url": redis_db, "hot_store.call_timeout": "123ms", "hot_store.replicas": 4},
    )
    server = DispatcherServer(config)
    await server.start()
    try:
        ledger = server.runtime.ledger
        assert isinstance(ledger, FailoverLedger)
        assert isinstance(ledger.primary, RedisLedger)
        assert ledger.primary.call_timeout == pytest.approx(0.123)
        assert ledger.replicas == 4
    finally:
        await server.stop(grace=0)


async def test_a_gateway_port_in_use_fails_the_start_and_stops_everything(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = embedded_config(
            tmp_path,
            **{"relay.gateway_with_server": True, "relay.gateway_listen": f"127.0.0.1:{port}"},
        )
        server = DispatcherServer(config)
        with pytest.raises(OSError, match="cannot serve the gateway"):
            await server.start()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.runtime  # closed, not leaked


@pytest.mark.postgres
async def test_refuses_an_unmigrated_shared_database(tmp_path: Path, fresh_pg_url: str) -> None:
    """SQLite is migrated on start; a shared PostgreSQL ledger is migrated deliberately."""
    server = DispatcherServer(embedded_config(tmp_path, **{"durable.database_url": fresh_pg_url}))
    with pytest.raises(FailedPrecondition, match="dispatcher migrate"):
        await server.start()


async def test_a_second_server_on_a_taken_port_fails_instead_of_sharing_it(
    tmp_path: Path,
) -> None:
    """gRPC's default SO_REUSEPORT would let two dispatchers share a port silently."""
    first = DispatcherServer(embedded_config(tmp_path / "a"))
    await first.start()
    try:
        port = first.address.rsplit(":", 1)[1]
        second = DispatcherServer(
            embedded_config(tmp_path / "b", **{"server.listen": f"127.0.0.1:{port}"})
        )
        with pytest.raises(OSError, match="cannot listen"):
            await second.start()
    finally:
        await first.stop(grace=0)
