"""Helpers for Route tests on the real server: configs, fake regional agents, calls.

A ``FakeAgent`` is what a regional agent looks like on the wire: one ``AgentService.Connect``
stream, an announce on the first report, then heartbeats with load and cumulative
per-version counters. Every report carries the announce again: an announce is exempt from
the registry's flood check (reports faster than half the heartbeat interval), so a test can
send reports back to back without waiting out a heartbeat interval.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

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
from tests.rpc.conftest import embedded_config

HOT_STORES = ["memory", pytest.param("redis", marks=pytest.mark.redis)]
LANE_PB = {
    "light": common_pb2.TASK_CLASS_LIGHT,
    "standard": common_pb2.TASK_CLASS_STANDARD,
    "heavy": common_pb2.TASK_CLASS_HEAVY,
}
BIG_POOL: dict[str, object] = {"tpm": 1e12, "rpm": 1e9, "safety_factor": 1.0}


def hot_store_overrides(hot_store: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """``hot_store.url`` for the parametrised backend (``redis_db`` flushes database 15)."""
    if hot_store == "redis":
        return {"hot_store.url": request.getfixturevalue("redis_db")}
    return {}


@asynccontextmanager
async def running(
    tmp_path: Path, name: str = "ledger", **overrides: object
) -> AsyncIterator[DispatcherServer]:
    """A started ``DispatcherServer`` on the embedded config plus ``overrides``."""
    settings: dict[str, object] = {
        "durable.database_url": f"sqlite+aiosqlite:///{tmp_path / f'{name}.sqlite3'}"
    }
    settings.update(overrides)
    server = DispatcherServer(embedded_config(tmp_path, **settings))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0)


@dataclass
class FakeAgent:
    """One cluster's regional agent: a Connect stream it reports on (see module docstring)."""

    channel: grpc.aio.Channel
    cluster_id: str
    slots: int = 8
    pool_ids: Sequence[str] = ()
    versions: Sequence[str] = ()
    backends: Sequence[str] = ()
    lanes: Mapping[str, int] = field(default_factory=dict)
    region: str = "westeurope"
    boot_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    _seq: int = 0
    _stream: Any = None  # the Connect call (typed as a plain iterator by the stubs)

    def announcement(self) -> agent_pb2.ClusterAnnouncement:
        return agent_pb2.ClusterAnnouncement(
            region=self.region,
            endpoint=f"{self.cluster_id}.example:443",
            slots=self.slots,
            agent_versions=list(self.versions),
            backends=list(self.backends),
            pool_ids=list(self.pool_ids),
            lanes=[
                common_pb2.LaneCapacity(lane=LANE_PB[lane], slots=n)
                for lane, n in self.lanes.items()
            ],
        )

    async def connect(self, in_flight: int = 0) -> FakeAgent:
        """Open the stream and announce; returns once the registry has acked it."""
        stub: Any = agent_pb2_grpc.AgentServiceStub(self.channel)
        self._stream = stub.Connect()
        self._seq = 0
        await self.report(in_flight=in_flight)
        return self

    async def report(
        self, in_flight: int = 0, counters: Mapping[str, tuple[int, int]] | None = None
    ) -> None:
        """One heartbeat; ``counters``: version -> cumulative (succeeded, failed)."""
        assert self._stream is not None, "connect() first"
        self._seq += 1
        versions = [
            agent_pb2.VersionCounters(
                agent_version=version, started=ok + bad, succeeded=ok, failed=bad
            )
            for version, (ok, bad) in (counters or {}).items()
        ]
        await self._stream.write(
            agent_pb2.AgentReport(
                seq=self._seq,
                cluster_id=self.cluster_id,
                boot_id=self.boot_id,
                announce=self.announcement(),
                load=agent_pb2.LoadReport(in_flight=in_flight),
                versions=versions,
            )
        )
        while True:
            directive = await self._stream.read()
            assert directive is not grpc.aio.EOF, "the dispatcher ended the stream"
            if directive.WhichOneof("kind") == "ack" and directive.ack.seq == self._seq:
                assert not directive.ack.rejected_reason, directive.ack.rejected_reason
                return

    async def restart(self) -> None:
        """The agent process restarts: the old stream ends, a new one opens with a new boot id."""
        await self.close()
        self.boot_id = uuid.uuid4().hex[:12]
        await self.connect()

    async def close(self) -> None:
        if self._stream is not None:
            await self._stream.done_writing()
            self._stream = None


def route_request(
    request_id: str,
    *,
    route: str = "chat-default",
    agent: str = "auditor",
    tokens: int = 100,
    **fields: Any,
) -> routing_pb2.RouteRequest:
    return routing_pb2.RouteRequest(
        request_id=request_id,
        route=route,
        agent=agent,
        estimate=common_pb2.TokenEstimate(input_tokens=tokens, max_output_tokens=tokens),
        **fields,
    )


def routing(channel: grpc.aio.Channel) -> Any:
    """The RoutingService stub (Any: the generated stubs are typed as if synchronous)."""
    return routing_pb2_grpc.RoutingServiceStub(channel)


def admin(channel: grpc.aio.Channel) -> Any:
    return admin_pb2_grpc.AdminServiceStub(channel)


async def route_error(stub: Any, request: routing_pb2.RouteRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Route(request)
    return caught.value


def status_details(error: grpc.aio.AioRpcError) -> list[Any]:
    """The unpacked ``google.rpc`` details (RetryInfo, BadRequest) of a failed call."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no grpc-status-details-bin on the error"
    out: list[Any] = []
    for detail in status.details:
        for kind in (error_details_pb2.RetryInfo, error_details_pb2.BadRequest):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                out.append(message)
    return out


async def quota_dims(
    channel: grpc.aio.Channel, pool_id: str
) -> dict[str, admin_pb2.QuotaDimension]:
    reply = await admin(channel).GetQuota(admin_pb2.GetQuotaRequest(pool_ids=[pool_id]))
    (pool,) = reply.pools
    return {dim.name: dim for dim in pool.dimensions}


async def eventually(
    probe: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 10.0
) -> Any:
    """Call ``await probe()`` until ``done(result)``; the last result, or fail at the deadline."""
    async with asyncio.timeout(timeout):
        while True:
            result = await probe()
            if done(result):
                return result
            await asyncio.sleep(0.01)


def shares(cluster_ids: Iterable[str]) -> dict[str, float]:
    ids = list(cluster_ids)
    return {cid: ids.count(cid) / len(ids) for cid in sorted(set(ids))}
