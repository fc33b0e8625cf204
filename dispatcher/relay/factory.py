"""Choosing a result store from a hot-store URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from dispatcher.config import DispatcherConfig
from dispatcher.errors import ConfigError
from dispatcher.redis_client import is_redis_url
from dispatcher.relay.memory import MemoryResultStore
from dispatcher.relay.model import RelaySettings, ResultStore
from dispatcher.relay.redis_store import DEFAULT_NAMESPACE, RedisResultStore


def relay_settings(config: DispatcherConfig) -> RelaySettings:
    """The store's limits from the ``relay`` config section."""
    return RelaySettings(ttl=config.relay.ttl, max_bytes_per_task=config.relay.max_bytes_per_task)


async def open_result_store(
    url: str, settings: RelaySettings | None = None, *, namespace: str = DEFAULT_NAMESPACE
) -> ResultStore:
    """``memory://``, a Redis or a Redis Cluster URL (as ``hot_store.url``); the store owns its
    connections, so ``aclose()`` it. Memory is only right for the single-process embedded
    system: replicas must share Redis, or a caller would miss results published elsewhere."""
    if urlsplit(url).scheme == "memory":
        return MemoryResultStore(settings)
    if not is_redis_url(url):
        raise ConfigError(
            "configuration", "hot_store.url", f"unsupported URL {url.split(':')[0]!r}"
        )
    return await RedisResultStore.open(url, settings, namespace)
