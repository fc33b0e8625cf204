"""The sticky-session table, the same contract on memory and on Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from dispatcher.fleet.sessions import MemorySessionStore, RedisSessionStore, SessionStore
from dispatcher.redis_client import client_from_url


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis_cluster),
    ]
)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    if request.param == "memory":
        yield MemorySessionStore()
        return
    if request.param == "redis-cluster":
        url = request.getfixturevalue("redis_cluster_db")
        client = client_from_url(url, timeout_s=5.0, max_connections=16)
    else:
        client = aioredis.Redis.from_url(request.getfixturevalue("redis_db"))
    try:
        yield RedisSessionStore(client)
    finally:
        await client.aclose()


async def test_a_new_session_has_no_pin(store: SessionStore) -> None:
    assert await store.get("conversation-1") is None


async def test_pin_then_get_returns_the_pin(store: SessionStore) -> None:
    await store.pin("conversation-1", "eu-1", "boot-a", "gpt-4o", handover=False)
    record = await store.get("conversation-1")
    assert record is not None
    assert (record.cluster_id, record.boot_id, record.backend) == ("eu-1", "boot-a", "gpt-4o")
    assert record.handovers == 0


async def test_handover_moves_the_session_and_counts_it(store: SessionStore) -> None:
    await store.pin("c1", "eu-1", "boot-a", "gpt-4o", handover=False)
    moved = await store.pin("c1", "us-1", "boot-x", "gpt-4o", handover=True)
    assert moved.handovers == 1
    assert [r.session_key for r in await store.sessions("us-1")] == ["c1"]
    assert await store.sessions("eu-1") == []


async def test_long_session_keys_are_fine(store: SessionStore) -> None:
    key = "k" * 256
    await store.pin(key, "eu-1", "boot-a", "", handover=False)
    record = await store.get(key)
    assert record is not None
    assert record.session_key == key


async def test_listing_filters_by_cluster_and_limits(store: SessionStore) -> None:
    for i in range(5):
        await store.pin(f"s{i}", "eu-1" if i % 2 else "us-1", "b", "", handover=False)
    assert len(await store.sessions()) == 5
    assert {r.session_key for r in await store.sessions("eu-1")} == {"s1", "s3"}
    assert len(await store.sessions(limit=2)) == 2


async def test_memory_sessions_expire_when_idle() -> None:
    now = [1000.0]
    store = MemorySessionStore(ttl_s=60, clock=lambda: now[0])
    await store.pin("s", "eu-1", "b", "", handover=False)
    now[0] += 59
    assert await store.get("s") is not None  # use restarts the idle timer
    now[0] += 59
    assert await store.get("s") is not None
    now[0] += 61
    assert await store.get("s") is None
