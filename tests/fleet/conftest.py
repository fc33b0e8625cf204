"""The cluster registry contract runs on every backend: memory (fake clock), Redis, and a
private Redis Cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from dispatcher.fleet.memory import MemoryClusterRegistry
from dispatcher.fleet.model import (
    ClusterInfo,
    ClusterLoad,
    ClusterReport,
    VersionCounters,
)
from dispatcher.fleet.redis_registry import RedisClusterRegistry
from dispatcher.fleet.registry import ClusterRegistry, RegistrySettings
from dispatcher.redis_client import client_from_url


@dataclass
class Backend:
    """A registry factory plus a way to let server time pass on that backend."""

    make: Callable[[RegistrySettings], ClusterRegistry]
    advance: Callable[[float], Awaitable[None]]


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis_cluster),
    ]
)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        now = [1_000_000.0]

        async def advance_clock(seconds: float) -> None:
            now[0] += seconds

        yield Backend(lambda s: MemoryClusterRegistry(s, clock=lambda: now[0]), advance_clock)
        return
    url = request.getfixturevalue("redis_db" if request.param == "redis" else "redis_cluster_db")
    client = client_from_url(url, timeout_s=5, max_connections=64)
    made: list[ClusterRegistry] = []

    def make(settings: RegistrySettings) -> ClusterRegistry:
        made.append(RedisClusterRegistry(client, settings))
        return made[-1]

    async def wait(seconds: float) -> None:
        # Redis uses its own clock (TIME): letting real time pass is what is under test.
        await asyncio.sleep(seconds)

    try:
        yield Backend(make, wait)
    finally:
        for registry in made:
            await registry.aclose()
        await client.aclose()


def info(cluster_id: str = "c1", **changes: object) -> ClusterInfo:
    fields: dict[str, object] = {
        "id": cluster_id,
        "region": "westeurope",
        "endpoint": f"{cluster_id}.example:443",
        "slots": 16,
        "cores": 8.0,
        "memory_bytes": 32 << 30,
        "versions": ("auditor@16.4",),
        "backends": ("gpt-4o",),
        "pool_ids": ("azure-openai/westeurope/gpt-4o",),
    }
    fields.update(changes)
    return ClusterInfo(**fields)  # type: ignore[arg-type]


def counters(version: str = "auditor@16.4", *values: int) -> VersionCounters:
    return VersionCounters(version, *values)


def report(
    cluster_id: str = "c1",
    boot_id: str = "boot-a",
    *,
    announce: bool = False,
    versions: tuple[VersionCounters, ...] = (),
    **load: object,
) -> ClusterReport:
    return ClusterReport(
        cluster_id=cluster_id,
        boot_id=boot_id,
        info=info(cluster_id) if announce else None,
        load=ClusterLoad(versions=versions, **load),  # type: ignore[arg-type]
    )
