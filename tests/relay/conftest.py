"""Relay fixtures: every store test runs on memory, Redis (``redis_db``, database 15) and a
private Redis Cluster (``redis_cluster_db``).

Memory time is a ``FakeClock``; Redis keeps its own time, so TTL tests on Redis check the
keys' expiry instead of waiting for it. ``relay_server`` is a grpc.aio server on a free
loopback port with the real ``ResultServicer`` over the chosen store.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest

from dispatcher.relay.memory import MemoryResultStore
from dispatcher.relay.model import RelaySettings, ResultStore
from dispatcher.relay.redis_store import RedisResultStore
from dispatcher.rpc.result_service import ResultServicer
from dispatcher.v1 import result_pb2_grpc
from tests.clock import FakeClock

BACKENDS = [
    "memory",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis-cluster", marks=pytest.mark.redis_cluster),
]
FIXTURE_OF = {"redis": "redis_db", "redis-cluster": "redis_cluster_db"}


MakeStore = Callable[..., Awaitable[ResultStore]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=BACKENDS)
async def make_store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[MakeStore]:
    """``await make_store(RelaySettings(...))`` -> a fresh, empty store on this backend."""
    fixture = FIXTURE_OF.get(request.param)
    url = request.getfixturevalue(fixture) if fixture else ""
    opened: list[ResultStore] = []

    async def make(settings: RelaySettings | None = None) -> ResultStore:
        store: ResultStore
        if url:
            namespace = f"test:relay:{uuid.uuid4().hex[:8]}"
            store = await RedisResultStore.open(url, settings, namespace)
        else:
            store = MemoryResultStore(settings, clock=clock)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.aclose()


@pytest.fixture
async def store(make_store: MakeStore) -> ResultStore:
    return await make_store()


@dataclass
class RelayServer:
    store: ResultStore
    address: str
    servicer: ResultServicer


async def start_relay_server(
    store: ResultStore, keepalive_interval: float = 15.0
) -> tuple[grpc.aio.Server, RelayServer]:
    server = grpc.aio.server()
    servicer = ResultServicer(store, keepalive_interval=keepalive_interval)
    result_pb2_grpc.add_ResultServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, RelayServer(store, f"127.0.0.1:{port}", servicer)


@pytest.fixture
async def relay_server(store: ResultStore) -> AsyncIterator[RelayServer]:
    """The real servicer over ``store``; keepalives every 50 ms (a compressed clock)."""
    server, info = await start_relay_server(store, keepalive_interval=0.05)
    try:
        yield info
    finally:
        await server.stop(grace=None)


@pytest.fixture
async def channel(relay_server: RelayServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(relay_server.address) as chan:
        yield chan


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds (a state we cannot be told about), or fail."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110  # nothing to await: we poll state
            await asyncio.sleep(0.005)
