"""Choosing a result store from a hot-store URL, and the replicas' routed store."""

from __future__ import annotations

from urllib.parse import urlsplit

from dispatcher.config import DispatcherConfig
from dispatcher.errors import ConfigError
from dispatcher.redis_client import AnyRedis, is_redis_url
from dispatcher.relay.memory import MemoryResultStore
from dispatcher.relay.model import RelaySettings, ResultStore
from dispatcher.relay.redis_store import DEFAULT_NAMESPACE, RedisResultStore
from dispatcher.relay.routed import RoutedResultStore
from dispatcher.relay.tokens import TaskTokens, shared_secret


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


async def open_routed_store(
    config: DispatcherConfig, redis: AnyRedis | None
) -> tuple[RoutedResultStore, TaskTokens]:
    """The store every replica (and the gateway) serves, opening routed tasks' streams on
    first use, and the token scheme behind it: ``relay.token_secret``, else the secret the
    replicas keep in ``redis``, else (embedded, no Redis) a fresh one."""
    secret = config.relay.token_secret
    key = await shared_secret(secret.get_secret_value() if secret else None, redis)
    tokens = TaskTokens(key)
    store = await open_result_store(config.hot_store.url, relay_settings(config))
    return RoutedResultStore(store, tokens), tokens
