"""The ``ResultStore`` contract, run on memory and on Redis alike."""

from __future__ import annotations

import asyncio

import pytest

from dispatcher.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from dispatcher.relay.memory import MemoryResultStore
from dispatcher.relay.model import (
    EventKind,
    RelaySettings,
    ResultStore,
    ResultTooLarge,
    parse_event_id,
    token_digest,
)
from dispatcher.relay.redis_store import RedisResultStore
from tests.relay.conftest import FakeClock, MakeStore, eventually

PROGRESS, FINAL, ERROR = EventKind.PROGRESS, EventKind.FINAL, EventKind.ERROR


async def publish_all(store: ResultStore, task_id: str, count: int, final: bool) -> list[str]:
    ids = []
    for seq in range(1, count + 1):
        kind = FINAL if final and seq == count else PROGRESS
        ids.append(
            (await store.publish(task_id, kind, f"p{seq}".encode(), "text/plain", seq)).event_id
        )
    return ids


async def test_events_published_before_anyone_reads_are_kept_in_order(store: ResultStore) -> None:
    token = await store.register("t1")
    ids = await publish_all(store, "t1", 3, final=True)
    events = await store.read("t1", token)
    assert [e.event_id for e in events] == ids
    assert [e.kind for e in events] == [PROGRESS, PROGRESS, FINAL]
    assert [e.payload for e in events] == [b"p1", b"p2", b"p3"]
    assert {e.content_type for e in events} == {"text/plain"}
    assert [parse_event_id(i) for i in ids] == sorted(parse_event_id(i) for i in ids)
    assert len(set(ids)) == 3
    assert all(e.published_at > 1_600_000_000 for e in events)


async def test_reading_after_an_event_returns_the_rest_exactly_once(store: ResultStore) -> None:
    token = await store.register("t1")
    ids = await publish_all(store, "t1", 10, final=True)
    seen: list[str] = []
    cursor = ""
    while True:
        page = await store.read("t1", token, cursor, limit=3)
        if not page:
            break
        seen.extend(e.event_id for e in page)
        cursor = page[-1].event_id
    assert seen == ids
    assert [e.event_id for e in await store.read("t1", token, ids[4])] == ids[5:]
    assert await store.read("t1", token, ids[-1]) == []


@pytest.mark.parametrize(
    "bad", ["abc", "1-", "-1", "1-2-3", " 1-0", "1-0 ", "99999999999999999999-0"]
)
async def test_a_malformed_event_id_is_refused_naming_after_event_id(
    store: ResultStore, bad: str
) -> None:
    token = await store.register("t1")
    await publish_all(store, "t1", 1, final=False)
    with pytest.raises(InvalidArgument) as caught:
        await store.read("t1", token, bad)
    assert caught.value.field == "after_event_id"


async def test_an_event_id_after_the_last_event_is_refused(store: ResultStore) -> None:
    token = await store.register("t1")
    with pytest.raises(InvalidArgument, match="after the task's last event"):
        await store.read("t1", token, "1-0")  # nothing published yet
    [last] = await publish_all(store, "t1", 1, final=False)
    ms, n = parse_event_id(last)
    with pytest.raises(InvalidArgument) as caught:
        await store.read("t1", token, f"{ms}-{n + 1}")
    assert caught.value.field == "after_event_id"


async def test_an_unknown_task_is_not_found(store: ResultStore) -> None:
    with pytest.raises(NotFound):
        await store.read("nope", "token")
    with pytest.raises(NotFound):
        await store.publish("nope", PROGRESS, b"", "", 1)


async def test_only_the_token_holder_can_read(store: ResultStore) -> None:
    await store.register("t1")
    with pytest.raises(PermissionDenied):
        await store.read("t1", "not-the-token")


async def test_registering_again_is_idempotent_only_with_the_same_token(
    store: ResultStore,
) -> None:
    token = await store.register("t1")
    assert await store.register("t1", token) == token
    with pytest.raises(AlreadyExists):
        await store.register("t1", "another-token")
    with pytest.raises(AlreadyExists):
        await store.register("t1")
    assert await store.register("t2", "chosen-token") == "chosen-token"
    await store.read("t2", "chosen-token")


async def test_a_repeated_sequence_is_a_no_op_even_after_the_final(store: ResultStore) -> None:
    token = await store.register("t1")
    first = await store.publish("t1", PROGRESS, b"a", "", 1)
    again = await store.publish("t1", PROGRESS, b"a", "", 1)
    assert (again.event_id, again.duplicate, first.duplicate) == (first.event_id, True, False)
    final = await store.publish("t1", FINAL, b"done", "", 2)
    retried = await store.publish("t1", FINAL, b"done", "", 2)
    assert (retried.event_id, retried.duplicate) == (final.event_id, True)
    assert [e.event_id for e in await store.read("t1", token)] == [first.event_id, final.event_id]


@pytest.mark.parametrize("terminal", [FINAL, ERROR])
async def test_nothing_is_published_after_the_stream_ended(
    store: ResultStore, terminal: EventKind
) -> None:
    await store.register("t1")
    await store.publish("t1", terminal, b"", "", 1)
    with pytest.raises(FailedPrecondition, match="already ended"):
        await store.publish("t1", PROGRESS, b"late", "", 2)


async def test_stored_bytes_per_task_are_capped(make_store: MakeStore) -> None:
    store = await make_store(RelaySettings(max_bytes_per_task=100))
    token = await store.register("t1")
    await store.publish("t1", PROGRESS, b"x" * 60, "", 1)
    with pytest.raises(ResultTooLarge, match="task t1: result exceeds 100 bytes"):
        await store.publish("t1", PROGRESS, b"x" * 41, "", 2)
    await store.publish("t1", FINAL, b"x" * 40, "", 3)  # exactly at the cap
    assert [len(e.payload) for e in await store.read("t1", token)] == [60, 40]


@pytest.mark.parametrize("task_id", ["", "has space", "x" * 129])
async def test_a_bad_task_id_is_refused(store: ResultStore, task_id: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await store.register(task_id)
    assert caught.value.field == "task_id"


async def test_wait_returns_at_once_when_an_event_is_already_there(store: ResultStore) -> None:
    await store.register("t1")
    [first] = await publish_all(store, "t1", 1, final=False)
    assert await store.wait("t1", "", timeout=5.0)
    # Nothing after ``first``: it times out (a spurious wake-up, e.g. when Redis' subscription
    # is confirmed, is allowed by the contract, hence the second try).
    timed_out = [await store.wait("t1", first, timeout=0.05) for _ in range(2)]
    assert timed_out[-1] is False


async def test_a_waiter_wakes_when_an_event_is_published(store: ResultStore) -> None:
    await store.register("t1")
    waiters = [asyncio.create_task(store.wait("t1", "", timeout=10.0)) for _ in range(5)]
    await store.publish("t1", PROGRESS, b"x", "", 1)
    async with asyncio.timeout(5):
        assert await asyncio.gather(*waiters) == [True] * 5


async def test_a_task_expires_ttl_after_its_last_publish(clock: FakeClock) -> None:
    store = MemoryResultStore(RelaySettings(ttl=60), clock=clock)
    token = await store.register("t1")
    clock.advance(50)
    await store.publish("t1", PROGRESS, b"x", "", 1)
    clock.advance(50)  # 100 s after registration, 50 s after the publish
    assert len(await store.read("t1", token)) == 1
    clock.advance(11)
    with pytest.raises(NotFound):
        await store.read("t1", token)
    await store.register("t2")  # and the expired task is swept, not kept forever
    assert "t1" not in store._tasks


@pytest.mark.redis
async def test_redis_keys_carry_the_ttl_and_only_a_token_digest(redis_db: str) -> None:
    store = await RedisResultStore.open(redis_db, RelaySettings(ttl=60), "test:ttl")
    try:
        token = await store.register("t1")
        await store.publish("t1", PROGRESS, b"x", "", 1)
        client = store._client
        keys = sorted(k.decode() for k in await client.keys("test:ttl:*"))
        assert keys == ["test:ttl:{t1}:events", "test:ttl:{t1}:meta", "test:ttl:{t1}:seqs"]
        for key in keys:
            assert 0 < await client.pttl(key) <= 60_000
        meta = await client.hgetall("test:ttl:{t1}:meta")
        assert meta[b"token"] == token_digest(token).encode()
        assert token.encode() not in b"".join([*meta.keys(), *meta.values()])
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_redis_waiters_share_one_subscription_and_block_no_connection(
    redis_db: str,
) -> None:
    """200 waiting streams cost no blocked Redis client: one pub/sub fans out to all."""
    store = await RedisResultStore.open(redis_db, namespace="test:fanout")
    try:
        for i in range(200):
            await store.register(f"t{i}")
        store.hub.start()
        await asyncio.wait_for(store.hub.ready.wait(), 5)
        waiters = [asyncio.create_task(store.wait(f"t{i}", "", timeout=30)) for i in range(200)]
        await eventually(lambda: store.hub.waiting == 200, timeout=10)
        info = await store._client.info("clients")
        assert info["blocked_clients"] == 0
        [(_, subscribers)] = await store._client.pubsub_numsub(store.hub.channel)
        assert subscribers == 1
        for i in range(200):
            await store.publish(f"t{i}", FINAL, b"", "", 1)
        async with asyncio.timeout(10):
            assert all(await asyncio.gather(*waiters))
        assert store.hub.waiting == 0
    finally:
        await store.aclose()
