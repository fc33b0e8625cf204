"""Which Redis client a URL names (no server needed: clients connect on first use)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from dispatcher.redis_client import client_from_url, is_cluster_url, is_redis_url, key_slot


@pytest.mark.parametrize(
    ("url", "cluster"),
    [
        ("redis://h:6379/2", False),
        ("rediss://h:6380", False),
        ("unix:///run/redis.sock", False),
        ("redis+cluster://h1:7000,h2:7001", True),
        ("rediss+cluster://h1:7000", True),
    ],
)
def test_the_scheme_says_single_node_or_cluster(url: str, cluster: bool) -> None:
    assert is_redis_url(url)
    assert is_cluster_url(url) is cluster


def test_other_schemes_are_not_redis() -> None:
    assert not is_redis_url("memory://")
    assert not is_redis_url("redis-cluster://h:1")


async def test_a_cluster_url_seeds_every_listed_node_with_its_credentials() -> None:
    url = "redis+cluster://:s3cret@10.0.0.1:7000,10.0.0.2:7001,10.0.0.3:7002"
    client = client_from_url(url, timeout_s=0.5, max_connections=4)
    assert isinstance(client, RedisCluster)
    seeds = {(node.host, node.port) for node in client.startup_nodes}
    assert seeds == {("10.0.0.1", 7000), ("10.0.0.2", 7001), ("10.0.0.3", 7002)}
    assert all(n.connection_kwargs["password"] == "s3cret" for n in client.startup_nodes)
    await client.aclose()


async def test_a_single_node_url_gets_a_plain_client_where_every_key_shares_a_slot() -> None:
    client = client_from_url("redis://127.0.0.1:1/3", timeout_s=0.5, max_connections=4)
    assert isinstance(client, Redis)
    assert key_slot(client, "dsp:{a}:journal") == key_slot(client, "dsp:{b}:journal") == 0
    await client.aclose()
