"""Redis clients: one seam for "single node or Redis Cluster", chosen by the URL.

``redis://``, ``rediss://`` and ``unix://`` name one server. ``redis+cluster://`` and
``rediss+cluster://`` name a Redis Cluster by one or more seed nodes, comma-separated; the
client discovers the rest::

    redis+cluster://:secret@10.0.0.1:6379,10.0.0.2:6379

Everything else in the URL (credentials, query options) means what it means for
``redis://``; a cluster has only database 0. Code that holds an :data:`AnyRedis` stays the
same for both kinds as long as every multi-key command or script keeps its keys in one hash
tag; the few differences are here (:func:`key_slot`, :data:`SERVER_TIME_LUA`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

AnyRedis = Redis | RedisCluster

SINGLE_SCHEMES = frozenset({"redis", "rediss", "unix"})
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

#: redis-py reports a cluster it cannot reach (no seed answers, slots uncovered) as a
#: RedisClusterException, which is not a RedisError; callers catch both.
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)

#: ``TIME`` as a script keyed on ``KEYS[1]``: it runs on the node holding that key, so it reads
#: the clock the key's scripts use, and may share a MULTI with reads of that key (a cluster
#: pipeline refuses keyless commands such as TIME).
SERVER_TIME_LUA = "return redis.call('TIME')"


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def is_redis_url(url: str) -> bool:
    """True for every URL :func:`client_from_url` opens."""
    return urlsplit(url).scheme in SINGLE_SCHEMES or is_cluster_url(url)


def client_from_url(
    url: str, *, timeout_s: float, max_connections: int, **options: Any
) -> AnyRedis:
    """A client for ``url``: every call fails after ``timeout_s``; at most ``max_connections``
    connections (per node on a cluster). A single node waits up to ``timeout_s`` for a free
    connection; a cluster client fails at once, so callers bound their own concurrency.
    ``options`` (e.g. ``decode_responses``) go to the client as they are."""
    options.update(socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    if not is_cluster_url(url):
        # After an outage every idle pooled connection is dead, and redis-py finds out only
        # when a command fails on it: one retry on a fresh connection, for connection errors
        # only (never a timeout, whose command may have run), keeps that from failing calls.
        options.setdefault("retry", Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))
        pool = BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout_s, **options
        )
        return Redis.from_pool(pool)
    first, more = _seeds(url)
    return RedisCluster.from_url(
        first,
        startup_nodes=[ClusterNode(host, port) for host, port in more],
        max_connections=max_connections,
        **options,
    )


def _seeds(url: str) -> tuple[str, list[tuple[str, int]]]:
    """The first seed as a plain ``redis(s)://`` URL (it carries credentials and options),
    then the other seeds as (host, port)."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    first, *others = hosts.split(",")
    netloc = f"{userinfo}@{first}" if userinfo else first
    plain = urlunsplit(parts._replace(scheme=CLUSTER_SCHEMES[parts.scheme], netloc=netloc))
    return plain, [_host_port(h) for h in others]


def _host_port(seed: str) -> tuple[str, int]:
    host, _, port = seed.rpartition(":")
    if not host or port.endswith("]"):  # no port, or a bare IPv6 address
        return seed.strip("[]"), 6379
    return host.strip("[]"), int(port)


def key_slot(client: AnyRedis, key: str) -> int:
    """The cluster slot of ``key``; 0 for every key on a single node, where any keys may go
    together in one command."""
    return client.keyslot(key) if isinstance(client, RedisCluster) else 0


def seconds(reply: Any) -> float:
    """A ``TIME`` reply (``[seconds, microseconds]``, strings or ints) as float seconds."""
    secs, micros = reply
    return int(secs) + int(micros) / 1e6
