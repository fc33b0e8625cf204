"""AdminService.SetWeights, SetBreaker and Watch on the real server.

Weights and breaker thresholds are persisted in the durable ledger: the replica that took
the change applies it at once, another replica on the same ledger within one heartbeat
interval, and a replica started later begins with it. Bad changes are refused naming the
field and change nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from dispatcher.server import DispatcherServer
from dispatcher.v1 import admin_pb2, common_pb2, routing_pb2
from tests.rpc.route_helpers import FakeAgent, admin, route_request, routing, running

POOL_ID = "openai/org-x"
POOLS = [{"id": POOL_ID, "tpm": 1e12, "rpm": 1e9, "safety_factor": 1.0}]
ROUTES = {
    "chat-default": {
        "backends": [{"name": "llama3-local", "weight": 90}, {"name": "gpt-4o", "weight": 10}]
    }
}
HEARTBEAT = "0.2s"
VERSIONS = ["auditor@16.4"]


@asynccontextmanager
async def replica(tmp_path: Path) -> AsyncIterator[tuple[DispatcherServer, grpc.aio.Channel]]:
    """A replica on the shared SQLite ledger, with two clusters announced to it."""
    async with (
        running(
            tmp_path, pools=POOLS, routes=ROUTES, **{"routing.heartbeat_interval": HEARTBEAT}
        ) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        for cid in ("c1", "c2"):
            agent = FakeAgent(channel, cid, slots=64, pool_ids=[POOL_ID], versions=VERSIONS)
            await agent.connect()
        await server.runtime.router.refresh()
        yield server, channel


def weights(server: DispatcherServer) -> dict[str, int]:
    route = server.runtime.router.engine.config.routes["chat-default"]
    return {b.name: b.weight for b in route.backends}


async def split(channel: grpc.aio.Channel, n: int, tag: str) -> Counter[str]:
    stub = routing(channel)
    decisions = await asyncio.gather(*(stub.Route(route_request(f"{tag}-{i}")) for i in range(n)))
    return Counter(d.backend for d in decisions)


async def until(probe: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def set_weights(pairs: dict[str, int], route: str = "chat-default") -> admin_pb2.SetWeightsRequest:
    return admin_pb2.SetWeightsRequest(
        route=route,
        weights=[admin_pb2.BackendWeight(backend=b, weight=w) for b, w in pairs.items()],
    )


async def test_set_weights_applies_at_once_on_another_replica_in_a_heartbeat_and_after_restart(
    tmp_path: Path,
) -> None:
    async with replica(tmp_path) as (_, one_channel), replica(tmp_path) as (two, _two_channel):
        reply = await admin(one_channel).SetWeights(set_weights({"llama3-local": 1, "gpt-4o": 1}))
        assert {w.backend: w.weight for w in reply.weights} == {"llama3-local": 1, "gpt-4o": 1}
        counts = await split(one_channel, 1000, "after")
        assert counts == {"llama3-local": 500, "gpt-4o": 500}  # smooth WRR: exact over 1000
        await until(lambda: weights(two) == {"llama3-local": 1, "gpt-4o": 1})
    async with replica(tmp_path) as (three, _):
        assert weights(three) == {"llama3-local": 1, "gpt-4o": 1}


@pytest.mark.parametrize(
    ("request_", "code", "field"),
    [
        (set_weights({"gpt-4o": 1}, route="no-such-route"), grpc.StatusCode.NOT_FOUND, "route"),
        (
            set_weights({"llama3-local": 0, "gpt-4o": 0}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "weights",
        ),
        (set_weights({"claude": 5}), grpc.StatusCode.INVALID_ARGUMENT, "weights[0].backend"),
        (set_weights({}), grpc.StatusCode.INVALID_ARGUMENT, "weights"),
    ],
    ids=["unknown route", "all zero", "unknown backend", "empty"],
)
async def test_bad_weights_are_refused_naming_the_field_and_change_nothing(
    tmp_path: Path, request_: admin_pb2.SetWeightsRequest, code: grpc.StatusCode, field: str
) -> None:
    async with replica(tmp_path) as (server, channel):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin(channel).SetWeights(request_)
        assert caught.value.code() == code
        assert field in (caught.value.details() or "")
        assert weights(server) == {"llama3-local": 90, "gpt-4o": 10}
        assert await server.runtime.durable.route_weights() == {}


async def test_set_breaker_changes_only_the_fields_given_and_persists(tmp_path: Path) -> None:
    async with replica(tmp_path) as (server, channel):
        settings = admin_pb2.BreakerSettings(
            agent="auditor", failure_rate=0.25, open_for=Duration(seconds=90)
        )
        reply = await admin(channel).SetBreaker(admin_pb2.SetBreakerRequest(settings=settings))
        assert (reply.failure_rate, reply.open_for.seconds) == (0.25, 90)
        assert (reply.window, reply.min_calls) == (200, 50)  # the defaults, untouched
        spec = server.runtime.router.engine.config.agent_spec("auditor@16.4").breaker
        assert (spec.failure_rate, spec.open_for, spec.window) == (0.25, 90.0, 200)
        stored = await server.runtime.durable.breaker_settings()
        assert stored["auditor"]["failure_rate"] == 0.25


@pytest.mark.parametrize(
    ("settings", "code", "field"),
    [
        (admin_pb2.BreakerSettings(agent="nobody"), grpc.StatusCode.NOT_FOUND, "nobody"),
        (admin_pb2.BreakerSettings(), grpc.StatusCode.INVALID_ARGUMENT, "settings.agent"),
        (
            admin_pb2.BreakerSettings(agent="auditor", failure_rate=1.5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "settings.failure_rate",
        ),
        (
            admin_pb2.BreakerSettings(agent="auditor", min_calls=500),
            grpc.StatusCode.INVALID_ARGUMENT,
            "settings.min_calls",
        ),
    ],
    ids=["unknown agent", "no agent", "rate above 1", "min_calls above window"],
)
async def test_bad_breaker_settings_are_refused_naming_the_field(
    tmp_path: Path, settings: admin_pb2.BreakerSettings, code: grpc.StatusCode, field: str
) -> None:
    async with replica(tmp_path) as (server, channel):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin(channel).SetBreaker(admin_pb2.SetBreakerRequest(settings=settings))
        assert caught.value.code() == code
        assert field in (caught.value.details() or "")
        assert await server.runtime.durable.breaker_settings() == {}


async def test_watch_streams_the_kinds_asked_for_as_they_happen(tmp_path: Path) -> None:
    async with replica(tmp_path) as (server, channel):
        decisions = admin(channel).Watch(
            admin_pb2.WatchRequest(types=[admin_pb2.EVENT_TYPE_DECISION])
        )
        drains = admin(channel).Watch(admin_pb2.WatchRequest(types=[admin_pb2.EVENT_TYPE_DRAIN]))
        await until(lambda: len(server.runtime.router.watch) == 2)  # both subscribed
        routed = await routing(channel).Route(route_request("watched"))
        event = await decisions.read()
        assert event.type == admin_pb2.EVENT_TYPE_DECISION
        assert event.cluster_id == routed.cluster.id
        assert event.attributes["reservation_id"] == routed.reservation_id
        await admin(channel).Drain(admin_pb2.DrainRequest(cluster_id="c2", reason="patching"))
        drained = await drains.read()  # the decision before it was not for this watcher
        assert (drained.type, drained.cluster_id) == (admin_pb2.EVENT_TYPE_DRAIN, "c2")
        assert "patching" in drained.summary
        decisions.cancel()
        drains.cancel()


async def test_stopping_the_server_ends_open_watch_streams(tmp_path: Path) -> None:
    """An operator's open ``watch`` must not hold a shutdown for its whole grace period."""
    async with replica(tmp_path) as (server, channel):
        watching = admin(channel).Watch(admin_pb2.WatchRequest())
        await until(lambda: len(server.runtime.router.watch) == 1)
        stopping = asyncio.create_task(server.stop(grace=60))
        assert await watching.read() is grpc.aio.EOF  # ended by the server, not cancelled
        await asyncio.wait_for(stopping, 20)  # far less than the 60 s grace
        assert await watching.code() == grpc.StatusCode.OK


async def test_list_clusters_shows_an_ejected_cluster(tmp_path: Path) -> None:
    async with replica(tmp_path) as (_, channel):
        stub = routing(channel)
        decisions = [await stub.Route(route_request(f"bad-{i}")) for i in range(12)]
        for decision in decisions:  # every task fails: some cluster hits five in a row
            await stub.Settle(
                routing_pb2.SettleRequest(
                    reservation_id=decision.reservation_id,
                    outcome=common_pb2.TASK_OUTCOME_FAILURE,
                )
            )
        listed = await admin(channel).ListClusters(admin_pb2.ListClustersRequest())
    ejected = [c for c in listed.clusters if c.HasField("ejected_until")]
    assert len(ejected) == 1  # never the last healthy one
    assert ejected[0].times_ejected == 1
    assert ejected[0].ejected_until.ToNanoseconds() / 1e9 > time.time()
