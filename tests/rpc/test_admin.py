"""AdminService over a real socket: quota, clusters, drain, limits, and operator roles."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import text

from dispatcher.ledger import Observation
from dispatcher.server import DispatcherServer
from dispatcher.v1 import admin_pb2, admin_pb2_grpc, agent_pb2, agent_pb2_grpc, common_pb2
from tests.agent.conftest import announce_report
from tests.rpc.conftest import embedded_config

POOLS = [
    {"id": "azure/eastus2/gpt-4o", "tpm": 450_000, "rpm": 2700, "mode": "fixed_minute"},
    {"id": "openai/org-x", "tpm": 100_000},
]
TOKENS = {
    "viewer": {"token": "read-token", "role": "read"},
    "oncall": {"token": "admin-token", "role": "admin"},
}


async def start(tmp_path: Path, **overrides: object) -> DispatcherServer:
    server = DispatcherServer(embedded_config(tmp_path, pools=POOLS, **overrides))
    await server.start()
    return server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[DispatcherServer]:
    srv = await start(tmp_path)
    try:
        yield srv
    finally:
        await srv.stop(grace=0)


@pytest.fixture
async def admin(server: DispatcherServer) -> AsyncIterator[admin_pb2_grpc.AdminServiceStub]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield admin_pb2_grpc.AdminServiceStub(channel)


async def failure(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_quota_lists_every_configured_pool(admin: admin_pb2_grpc.AdminServiceStub) -> None:
    reply = await admin.GetQuota(admin_pb2.GetQuotaRequest())
    pools = {p.pool_id: p for p in reply.pools}
    assert set(pools) == {"azure/eastus2/gpt-4o", "openai/org-x"}
    azure = pools["azure/eastus2/gpt-4o"]
    assert azure.mode == "fixed_minute"
    tpm = next(d for d in azure.dimensions if d.name == "tpm")
    assert tpm.limit == 450_000
    assert tpm.effective_limit <= tpm.limit
    assert tpm.reserved == 0


async def test_unknown_pool_is_not_found(admin: admin_pb2_grpc.AdminServiceStub) -> None:
    error = await failure(admin.GetQuota(admin_pb2.GetQuotaRequest(pool_ids=["nope"])))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_set_limits_applies_and_persists(
    server: DispatcherServer, admin: admin_pb2_grpc.AdminServiceStub
) -> None:
    reply = await admin.SetLimits(
        admin_pb2.SetLimitsRequest(pool_id="openai/org-x", limits={"tpm": 50_000})
    )
    tpm = next(d for d in reply.dimensions if d.name == "tpm")
    assert tpm.limit == 50_000
    records = await server.runtime.durable.pool_limits()
    assert records["openai/org-x"].limits == {"tpm": 50_000}


@pytest.mark.parametrize(
    ("limits", "field"),
    [({"tpm": -5}, "limits.tpm"), ({"colour": 3}, "limits.colour"), ({}, "limits")],
)
async def test_bad_limits_are_refused_and_change_nothing(
    server: DispatcherServer,
    admin: admin_pb2_grpc.AdminServiceStub,
    limits: dict[str, float],
    field: str,
) -> None:
    error = await failure(
        admin.SetLimits(admin_pb2.SetLimitsRequest(pool_id="openai/org-x", limits=limits))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith(f"{field}:")
    assert await server.runtime.durable.pool_limits() == {}
    snapshot = await server.runtime.ledger.snapshot("openai/org-x")
    assert snapshot.dims["tpm"].limit == 100_000


async def test_drain_reaches_the_cluster_and_shows_in_the_list(
    server: DispatcherServer, admin: admin_pb2_grpc.AdminServiceStub
) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stream = agent_pb2_grpc.AgentServiceStub(channel).Connect()
        await stream.write(announce_report("eu-1"))
        first = await stream.read()
        assert isinstance(first, agent_pb2.Directive)
        assert first.ack.seq == 1
        assert not first.ack.rejected_reason

        listed = await admin.ListClusters(admin_pb2.ListClustersRequest())
        assert [c.cluster.id for c in listed.clusters] == ["eu-1"]
        assert listed.clusters[0].admin_state == common_pb2.ADMIN_STATE_READY

        drained = await admin.Drain(admin_pb2.DrainRequest(cluster_id="eu-1", reason="reboot"))
        assert drained.admin_state == common_pb2.ADMIN_STATE_DRAIN
        directive = await asyncio.wait_for(stream.read(), timeout=10)
        assert isinstance(directive, agent_pb2.Directive)
        assert directive.drain.drain
        assert directive.drain.reason == "reboot"

        undrained = await admin.Undrain(admin_pb2.DrainRequest(cluster_id="eu-1"))
        assert undrained.admin_state == common_pb2.ADMIN_STATE_READY
        await stream.done_writing()


async def test_drain_of_an_unknown_cluster_is_not_found(
    admin: admin_pb2_grpc.AdminServiceStub,
) -> None:
    error = await failure(admin.Drain(admin_pb2.DrainRequest(cluster_id="nowhere")))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_operator_roles(tmp_path: Path) -> None:
    server = await start(tmp_path, **{"auth.operator_tokens": TOKENS})
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            request = admin_pb2.SetLimitsRequest(pool_id="openai/org-x", limits={"tpm": 1})

            anonymous = await failure(admin.GetQuota(admin_pb2.GetQuotaRequest()))
            assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
            wrong = await failure(
                admin.GetQuota(
                    admin_pb2.GetQuotaRequest(), metadata=(("authorization", "Bearer guess"),)
                )
            )
            assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED

            viewer = (("authorization", "Bearer read-token"),)
            assert (await admin.GetQuota(admin_pb2.GetQuotaRequest(), metadata=viewer)).pools
            denied = await failure(admin.SetLimits(request, metadata=viewer))
            assert denied.code() == grpc.StatusCode.PERMISSION_DENIED

            oncall = (("authorization", "Bearer admin-token"),)
            await admin.SetLimits(request, metadata=oncall)
            record = (await server.runtime.durable.pool_limits())["openai/org-x"]
            assert record.updated_by == "oncall"
    finally:
        await server.stop(grace=0)


async def test_operator_limits_survive_a_restart(tmp_path: Path) -> None:
    """Limits live in the durable ledger; a restarted replica starts from them."""
    first = await start(tmp_path)
    try:
        async with grpc.aio.insecure_channel(first.address) as channel:
            await admin_pb2_grpc.AdminServiceStub(channel).SetLimits(
                admin_pb2.SetLimitsRequest(pool_id="openai/org-x", limits={"tpm": 40_000})
            )
    finally:
        await first.stop(grace=0)
    second = await start(tmp_path)
    try:
        snapshot = await second.runtime.ledger.snapshot("openai/org-x")
        assert snapshot.dims["tpm"].limit == 40_000
        async with second.runtime.backends.engine.connect() as conn:
            rows = await conn.execute(text("SELECT count(*) FROM pool_limits"))
            assert rows.scalar_one() == 1
    finally:
        await second.stop(grace=0)


async def test_quota_shows_the_last_provider_observation(
    server: DispatcherServer, admin: admin_pb2_grpc.AdminServiceStub
) -> None:
    before = await admin.GetQuota(admin_pb2.GetQuotaRequest(pool_ids=["openai/org-x"]))
    assert not before.pools[0].HasField("last_observation")
    seen = Observation(time.time(), limit_tokens=60_000, remaining_tokens=30_000)
    await server.runtime.apply_observations("eu-west-1a", [("openai/org-x", seen)])
    after = await admin.GetQuota(admin_pb2.GetQuotaRequest(pool_ids=["openai/org-x"]))
    reading = after.pools[0].last_observation
    assert reading.observed_at.ToNanoseconds() / 1e9 == pytest.approx(seen.observed_at, abs=1e-3)
    assert (reading.limit_tokens, reading.limit_requests) == (60_000, -1)
    tpm = next(d for d in after.pools[0].dimensions if d.name == "tpm")
    assert tpm.effective_limit == pytest.approx(60_000)  # the lower limit is in force
