"""Choose and open a hot-store ledger from a URL: one explicit table, scheme -> backend.

``memory://`` is the embedded default; ``redis://``, ``rediss://`` and ``unix://`` open the
Redis ledger on one server, ``redis+cluster://`` and ``rediss+cluster://`` on a Redis Cluster
named by comma-separated seed nodes (``redis+cluster://10.0.0.1:6379,10.0.0.2:6379``; rules in
``dispatcher.redis_client``). The Redis ledger is wrapped (unless ``failover=False``) so each
pool follows its failure mode while Redis is unreachable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from dispatcher.errors import ConfigError
from dispatcher.ledger.fallback import FailoverLedger
from dispatcher.ledger.memory import MemoryLedger
from dispatcher.ledger.model import PoolSpec
from dispatcher.ledger.protocol import Ledger
from dispatcher.ledger.redis_backend import RedisLedger
from dispatcher.redis_client import is_redis_url

MEMORY_SCHEMES = frozenset({"memory"})


async def open_ledger(
    url: str,
    pools: Sequence[PoolSpec],
    *,
    replicas: int = 1,
    replica_id: str | None = None,
    failover: bool = True,
    **redis_options: Any,
) -> Ledger:
    """Open the ledger ``url`` names, seeded with ``pools``.

    ``replicas`` is how many dispatcher replicas share the pools (each one's static share
    is ``capacity * static_share / replicas``). ``redis_options`` go to
    :meth:`RedisLedger.open` (``max_connections``, ``timeout_s``, ``max_batch``...).
    ``replica_id`` prefixes the ids of events journalled locally during an outage; it must
    be unique per process (default: a random one), as SQL keeps one event per id.
    Raises BackendUnavailable when Redis cannot be reached at start.
    """
    scheme = urlsplit(url).scheme
    if scheme in MEMORY_SCHEMES:
        return MemoryLedger(pools)
    if not is_redis_url(url):
        raise ConfigError("configuration", "hot_store.url", f"unsupported scheme {scheme!r}")
    primary = await RedisLedger.open(url, pools, **redis_options)
    if not failover:
        return primary
    return FailoverLedger(primary, pools, replicas=replicas, replica_id=replica_id)
