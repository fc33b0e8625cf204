"""RedisJournalSource against a real Redis: ids, replay, takeover, trimming, bad entries."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from dispatcher.ledger.events import EventKind, JournalEvent
from dispatcher.ledger.sql.redis_source import GROUP, family_of, stream_key
from tests.durable.conftest import Names, eventually, lifecycle

pytestmark = pytest.mark.redis

T0 = 1_790_000_000.0


async def _entry_ids(client: aioredis.Redis, key: str) -> list[str]:
    return [i.decode() for i, _ in await client.xrange(key)]


def test_family_is_the_hash_tag() -> None:
    assert family_of("dsp:{eu-1}:journal") == "eu-1"
    assert stream_key("eu-1") == "dsp:{eu-1}:journal"


async def test_events_read_back_as_written_with_family_slash_entry_ids(
    redis_client: aioredis.Redis, names: Names
) -> None:
    written = lifecycle("r1", T0)
    ids = await names.journal(redis_client, names.family("f"), written)
    assert all(i.startswith(f"{names.family('f')}/") for i in ids)
    got = await names.source(redis_client).read(100, 0)
    assert [e.event_id for e in got] == ids
    assert [(e.kind, e.reservation_id, e.data) for e in got] == [
        (e.kind, e.reservation_id, e.data) for e in written
    ]


async def test_a_client_that_decodes_replies_reads_the_same_events(
    redis_db: str, redis_client: aioredis.Redis, names: Names
) -> None:
    written = lifecycle("r1", T0)
    ids = await names.journal(redis_client, names.family("f"), written)
    decoding = aioredis.Redis.from_url(redis_db, decode_responses=True)
    try:
        got = await names.source(decoding).read(100, 0)
    finally:
        await decoding.aclose()
    assert [e.event_id for e in got] == ids
    assert [(e.kind, e.at, e.reservation_id, e.pool_ids, e.data) for e in got] == [
        (e.kind, e.at, e.reservation_id, e.pool_ids, e.data) for e in written
    ]


async def test_all_registered_streams_are_read(redis_client: aioredis.Redis, names: Names) -> None:
    a = await names.journal(redis_client, names.family("a"), lifecycle("r1", T0))
    b = await names.journal(redis_client, names.family("b"), lifecycle("r2", T0))
    got = {e.event_id for e in await names.source(redis_client).read(100, 0)}
    assert got == set(a) | set(b)


async def test_reading_again_before_ack_returns_the_same_events(
    redis_client: aioredis.Redis, names: Names
) -> None:
    ids = await names.journal(redis_client, names.family("f"), lifecycle("r1", T0))
    source = names.source(redis_client)
    first = [e.event_id for e in await source.read(2, 0)]
    assert first == ids[:2]
    assert [e.event_id for e in await source.read(2, 0)] == first
    await source.ack(first)
    assert [e.event_id for e in await source.read(10, 0)] == ids[2:]


async def test_a_replayed_event_copied_twice_reads_as_one_id_and_one_ack_clears_both(
    redis_client: aioredis.Redis, names: Names
) -> None:
    """An outage journal's replay is at-least-once (its reply may be lost and it replays
    again): both copies carry the local id as ``origin``, which becomes the event id, so SQL
    stores the event once; acking that id acks both entries."""
    family = names.family("f")
    await names.journal(redis_client, family, [])  # registers the stream
    event = lifecycle("r1", T0)[0]
    for _ in range(2):
        fields = {**event.to_fields(), "origin": "local-abc123/7"}
        await redis_client.xadd(stream_key(family), fields)  # type: ignore[arg-type]
    source = names.source(redis_client)
    got = await source.read(10, 0)
    assert [e.event_id for e in got] == ["local-abc123/7", "local-abc123/7"]
    assert (got[0].kind, got[0].reservation_id) == (event.kind, event.reservation_id)
    await source.ack(["local-abc123/7"])
    assert await source.pending() == 0
    # A retried ack (the consumer retries when the first one's reply was lost) is harmless.
    await source.ack(["local-abc123/7"])
    assert await source.pending() == 0


async def test_a_restarted_consumer_gets_its_unacked_entries_first(
    redis_client: aioredis.Redis, names: Names
) -> None:
    family = names.family("f")
    ids = await names.journal(redis_client, family, lifecycle("r1", T0))
    await names.source(redis_client).read(10, 0)  # then the process dies
    await names.journal(redis_client, family, lifecycle("r2", T0))
    restarted = names.source(redis_client)
    assert [e.event_id for e in await restarted.read(10, 0)] == ids


async def test_a_dead_consumers_entries_are_taken_over_after_idle_time(
    redis_client: aioredis.Redis, names: Names
) -> None:
    ids = await names.journal(redis_client, names.family("f"), lifecycle("r1", T0))
    await names.source(redis_client, "dead").read(10, 0)
    heir = names.source(redis_client, "heir", claim_idle_ms=50)
    taken: list[str] = []

    async def took_all() -> bool:
        taken.extend(e.event_id for e in await heir.read(10, 0))
        return len(taken) >= len(ids)

    await eventually(took_all, what="XAUTOCLAIM takeover")
    assert taken == ids
    await heir.ack(taken)
    assert await heir.pending() == 0


async def test_pending_counts_undelivered_and_unacked(
    redis_client: aioredis.Redis, names: Names
) -> None:
    await names.journal(redis_client, names.family("f"), lifecycle("r1", T0))
    source = names.source(redis_client)
    assert await source.pending() == 4
    got = await source.read(3, 0)
    assert await source.pending() == 4
    await source.ack([e.event_id for e in got])
    assert await source.pending() == 1


async def test_a_family_with_a_slash_is_acked_and_trimmed(
    redis_client: aioredis.Redis, names: Names
) -> None:
    """Quota families look like ``azure/gpt-4o``: the entry id is what follows the last slash."""
    family = names.family("azure/gpt-4o")
    await names.journal(redis_client, family, lifecycle("r1", T0))
    source = names.source(redis_client)
    await source.ack([e.event_id for e in await source.read(10, 0)])
    assert await source.pending() == 0
    assert await _entry_ids(redis_client, stream_key(family)) == []


async def test_trimming_stops_at_the_oldest_unacked_entry(
    redis_client: aioredis.Redis, names: Names
) -> None:
    family = names.family("f")
    key = stream_key(family)
    ids = await names.journal(redis_client, family, [*lifecycle("r1", T0), *lifecycle("r2", T0)])
    entries = [i.split("/")[1] for i in ids]
    source = names.source(redis_client)
    await source.read(6, 0)
    await source.ack([ids[0], ids[1], ids[3], ids[4]])  # ids[2] still unacked
    assert await _entry_ids(redis_client, key) == entries[2:]
    await source.ack([ids[2], ids[5]])  # ids[6:] never delivered: they must stay
    assert await _entry_ids(redis_client, key) == entries[6:]


async def test_another_group_behind_keeps_its_entries(
    redis_client: aioredis.Redis, names: Names
) -> None:
    family = names.family("f")
    ids = await names.journal(redis_client, family, lifecycle("r1", T0))
    await redis_client.xgroup_create(stream_key(family), "audit", id="0")
    source = names.source(redis_client)
    await source.ack([e.event_id for e in await source.read(10, 0)])
    assert len(await _entry_ids(redis_client, stream_key(family))) == len(ids)


async def test_a_malformed_entry_is_moved_aside_not_lost(
    redis_client: aioredis.Redis, names: Names
) -> None:
    family = names.family("f")
    key = stream_key(family)
    good = JournalEvent("x", EventKind.BREAKER, T0, None, (), {"to": "open"})
    await names.journal(redis_client, family, [good])
    await redis_client.xadd(key, {"kind": "no-such-kind", "at": "1"})
    source = names.source(redis_client)
    got = await source.read(10, 0)
    assert [e.kind for e in got] == [EventKind.BREAKER]
    dead = await redis_client.xrange(f"{key}:dead")
    assert dead[0][1][b"kind"] == b"no-such-kind"
    await source.ack([e.event_id for e in got])
    assert (await redis_client.xpending(key, GROUP))["pending"] == 0


async def test_an_empty_registry_waits_instead_of_spinning(
    redis_client: aioredis.Redis, names: Names
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await names.source(redis_client).read(10, 50) == []
    assert loop.time() - started >= 0.04
