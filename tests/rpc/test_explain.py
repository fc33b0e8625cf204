"""AdminService.Explain, ListBreakers and ListSessions on the real server, and how dispatchctl
shows them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from dispatcher.cli import ctl, render
from dispatcher.server import DispatcherServer
from dispatcher.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    agent_pb2,
    agent_pb2_grpc,
    common_pb2,
    routing_pb2,
    routing_pb2_grpc,
)
from tests.rpc.conftest import embedded_config, running

POOL = "openai/org-x"


def announce(cluster_id: str, backends: list[str]) -> agent_pb2.AgentReport:
    return agent_pb2.AgentReport(
        seq=1,
        cluster_id=cluster_id,
        boot_id="boot-a",
        announce=agent_pb2.ClusterAnnouncement(
            region="westeurope",
            endpoint=f"{cluster_id}.example:443",
            slots=8,
            agent_versions=["auditor@16.4"],
            backends=backends,
            pool_ids=[POOL],
        ),
        load=agent_pb2.LoadReport(in_flight=0),
    )


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[DispatcherServer]:
    overrides = {
        "pools": [{"id": POOL, "tpm": 1_000_000}],
        "routes": {"chat-default": {"backends": [{"name": "gpt-4o", "weight": 100}]}},
    }
    async with running(embedded_config(tmp_path, **overrides)) as server:
        yield server


@pytest.fixture
async def admin(server: DispatcherServer) -> AsyncIterator[admin_pb2_grpc.AdminServiceStub]:
    """Two clusters: ``serves`` has the route's backend, ``other`` does not."""
    async with grpc.aio.insecure_channel(server.address) as chan:
        streams = []
        for cluster_id, backends in (("serves", ["gpt-4o"]), ("other", ["llama3"])):
            stream = agent_pb2_grpc.AgentServiceStub(chan).Connect()
            await stream.write(announce(cluster_id, backends))
            await stream.read()
            streams.append(stream)
        await server.runtime.router.refresh()
        yield admin_pb2_grpc.AdminServiceStub(chan)
        for stream in streams:
            await stream.done_writing()


async def test_explain_lists_every_candidate_with_its_reason_and_reserves_nothing(
    server: DispatcherServer, admin: admin_pb2_grpc.AdminServiceStub
) -> None:
    explanation = await admin.Explain(
        routing_pb2.RouteRequest(route="chat-default", agent="auditor")
    )
    by_id = {c.cluster.id: c for c in explanation.candidates}
    assert set(by_id) == {"serves", "other"}
    assert by_id["serves"].filter_reason == ""
    assert by_id["serves"].chosen
    assert by_id["serves"].score > 0
    assert by_id["other"].filter_reason != ""
    assert not by_id["other"].chosen
    assert explanation.decision.outcome == routing_pb2.ROUTE_OUTCOME_ROUTED
    assert explanation.decision.cluster.id == "serves"
    assert explanation.decision.reservation_id == ""
    snapshot = await server.runtime.ledger.snapshot(POOL)
    assert snapshot.dims["tpm"].reserved == 0


async def test_explain_of_an_unknown_route_is_not_found(
    admin: admin_pb2_grpc.AdminServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.Explain(routing_pb2.RouteRequest(route="nope", agent="auditor"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_dispatchctl_explain_builds_the_request_and_shows_each_candidate() -> None:
    args = ctl.build_parser().parse_args(
        ["explain", "chat-default", "--agent", "auditor@16.4", "--task-class", "heavy"]
    )
    request = ctl.explain_request(args)
    assert (request.route, request.agent, request.agent_version) == (
        "chat-default",
        "auditor",
        "auditor@16.4",
    )
    assert request.task_class == common_pb2.TASK_CLASS_HEAVY
    explanation = admin_pb2.Explanation(backend="gpt-4o")
    explanation.candidates.add(cluster=common_pb2.ClusterRef(id="serves"), score=0.25, chosen=True)
    explanation.candidates.add(cluster=common_pb2.ClusterRef(id="other"), filter_reason="draining")
    table = render.explain_table(explanation)
    cells = [list(column.cells) for column in table.columns]
    assert [str(c) for c in cells[0]] == ["serves", "other"]
    assert [str(c) for c in cells[3]] == ["eligible", "draining"]


async def test_list_breakers_shows_each_versions_state_and_thresholds(
    server: DispatcherServer, admin: admin_pb2_grpc.AdminServiceStub
) -> None:
    """Fed as the fleet refresh feeds it (heartbeat counter deltas): 10 failures in 100 calls
    trips auditor@16.4 (default 5 %); auditor@16.5 stays closed. How deltas come from
    heartbeats is pinned by tests/routing and tests/rpc/test_route.py."""
    engine, now = server.runtime.router.engine, time.time()
    assert engine.on_version_counts("auditor@16.4", 90, 10, 0, now) is not None
    assert engine.on_version_counts("auditor@16.5", 100, 0, 0, now) is None
    assert engine.on_version_counts("other@1", 100, 0, 0, now) is None
    reply = await admin.ListBreakers(admin_pb2.ListBreakersRequest(agent="auditor"))
    by_version = {b.agent_version: b for b in reply.breakers}
    assert set(by_version) == {"auditor@16.4", "auditor@16.5"}
    tripped, healthy = by_version["auditor@16.4"], by_version["auditor@16.5"]
    assert tripped.state == admin_pb2.BREAKER_STATE_OPEN
    assert tripped.HasField("open_until")
    assert tripped.settings.failure_rate == pytest.approx(0.05)
    assert healthy.state == admin_pb2.BREAKER_STATE_CLOSED
    assert (healthy.calls, healthy.failure_rate) == (100, 0.0)
    assert not healthy.HasField("open_until")


def test_dispatchctl_breakers_table_shows_state_and_thresholds() -> None:
    status = admin_pb2.BreakerStatus(
        agent_version="auditor@16.4", state=admin_pb2.BREAKER_STATE_OPEN, failure_rate=0.1
    )
    status.settings.window, status.settings.min_calls, status.settings.failure_rate = 200, 50, 0.05
    table = render.breakers_table([status])
    row = [str(next(iter(column.cells))) for column in table.columns]
    assert row[:3] == ["auditor@16.4", "open", "10.0%"]
    assert row[5] == "5% of >= 50"


async def test_list_sessions_shows_where_each_session_is_pinned(
    server: DispatcherServer, admin: admin_pb2_grpc.AdminServiceStub
) -> None:
    async with grpc.aio.insecure_channel(server.address) as chan:
        routing = routing_pb2_grpc.RoutingServiceStub(chan)
        for key in ("conv-1", "conv-2"):
            await routing.Route(
                routing_pb2.RouteRequest(
                    request_id=f"req-{key}", route="chat-default", agent="auditor", session_key=key
                )
            )
    reply = await admin.ListSessions(admin_pb2.ListSessionsRequest(cluster_id="serves"))
    assert sorted((s.session_key, s.cluster_id) for s in reply.sessions) == [
        ("conv-1", "serves"),
        ("conv-2", "serves"),
    ]
    assert all(s.boot_id == "boot-a" and s.handovers == 0 for s in reply.sessions)
    assert reply.next_page_token == ""
    elsewhere = await admin.ListSessions(admin_pb2.ListSessionsRequest(cluster_id="other"))
    assert list(elsewhere.sessions) == []


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [({"page_token": "abc"}, "page_token"), ({"limit": 1001}, "limit")],
)
async def test_list_sessions_refuses_paging_and_huge_pages_naming_the_field(
    admin: admin_pb2_grpc.AdminServiceStub, request_fields: dict[str, object], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.ListSessions(admin_pb2.ListSessionsRequest(**request_fields))  # type: ignore[arg-type]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (caught.value.details() or "")
