"""The Redis ledger on a real 3-primary Redis Cluster (DESIGN §7.5): one slot per family,
families spread over nodes, scripts reloaded per node, bursts queued, outages translated.

The contract suite itself runs on the cluster too (``make_ledger``'s ``redis-cluster``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster

from dispatcher.errors import BackendUnavailable
from dispatcher.ledger import open_ledger
from dispatcher.ledger.fallback import FailoverLedger
from dispatcher.ledger.model import Reservation, Usage
from dispatcher.ledger.redis_backend import RedisLedger
from dispatcher.ledger.redis_codec import RedisKeys
from dispatcher.redis_client import client_from_url
from tests.ledger.helpers import one, spec
from tests.redis_cluster import SPREAD_FAMILIES

FAMILIES = SPREAD_FAMILIES
POOLS = [spec(f"pool-{f}", f, tpm=100_000) for f in FAMILIES]


@pytest.fixture
async def cluster(redis_cluster_db: str) -> AsyncIterator[RedisCluster]:
    client = client_from_url(redis_cluster_db, timeout_s=5, max_connections=8)
    assert isinstance(client, RedisCluster)
    try:
        yield await client.initialize()  # so the slot map is known before any command
    finally:
        await client.aclose()


@pytest.fixture
async def ledger(redis_cluster_db: str) -> AsyncIterator[RedisLedger]:
    opened = await RedisLedger.open(redis_cluster_db, POOLS)
    try:
        yield opened
    finally:
        await opened.aclose()


async def _reserve(ledger: RedisLedger, family: str, request_id: str) -> Reservation:
    result = await ledger.reserve(one(request_id, f"pool-{family}"))
    assert isinstance(result, Reservation), result
    return result


@pytest.mark.redis_cluster
async def test_each_family_lives_in_one_slot_and_families_span_nodes(
    ledger: RedisLedger, cluster: RedisCluster
) -> None:
    keys, owners = RedisKeys(), set()
    for family in FAMILIES:
        rid = (await _reserve(ledger, family, "r1")).reservation_id
        family_keys = [
            keys.pool(family, f"pool-{family}"),
            keys.res(family, rid),
            keys.leases(family),
            keys.journal(family),
        ]
        assert await cluster.exists(*family_keys) == len(family_keys)
        # Asked of the server, not computed here: the slot Redis itself will use.
        slots = {await cluster.cluster_keyslot(k) for k in family_keys}
        assert len(slots) == 1, (family, slots)
        owners.add(cluster.get_node_from_key(keys.journal(family)).name)
    assert len(owners) == 3, "the test families should cover every primary"


@pytest.mark.redis_cluster
async def test_scripts_are_loaded_again_on_each_node_after_script_flush(
    ledger: RedisLedger, cluster: RedisCluster
) -> None:
    for family in FAMILIES:
        await _reserve(ledger, family, "before")
    assert await cluster.script_flush()  # every primary forgets every script
    for family in FAMILIES:
        reservation = await _reserve(ledger, family, "after")
        settled = await ledger.settle(reservation.reservation_id, Usage(1, 10, 0), "ok")
        assert not settled.replayed
    assert (await ledger.snapshot(f"pool-{FAMILIES[0]}")).pool_id == f"pool-{FAMILIES[0]}"


@pytest.mark.redis_cluster
async def test_a_burst_beyond_max_connections_waits_for_a_turn(redis_cluster_db: str) -> None:
    """A cluster client refuses connections beyond its cap; the ledger queues instead."""
    ledger = await RedisLedger.open(redis_cluster_db, POOLS, max_connections=2, timeout_s=5)
    try:
        reservations = [await _reserve(ledger, FAMILIES[0], f"r{i}") for i in range(40)]
        results = await asyncio.gather(
            *(ledger.settle(r.reservation_id, Usage(1, 10, 0), "ok") for r in reservations)
        )
        assert len(results) == 40
    finally:
        await ledger.aclose()


@pytest.mark.redis_cluster
async def test_open_ledger_accepts_a_cluster_url_with_failover(redis_cluster_db: str) -> None:
    ledger = await open_ledger(redis_cluster_db, POOLS, replicas=2)
    try:
        assert isinstance(ledger, FailoverLedger)
        assert isinstance(await ledger.reserve(one("r1", f"pool-{FAMILIES[1]}")), Reservation)
    finally:
        await ledger.aclose()


async def test_an_unreachable_cluster_is_backend_unavailable_at_open() -> None:
    with pytest.raises(BackendUnavailable, match="redis"):
        await RedisLedger.open("redis+cluster://127.0.0.1:1", POOLS, timeout_s=0.2)
