"""``dispatcher gateway``: the WebSocket gateway as a process of its own, beside the replicas.

It shares nothing with them but the hot store, so it needs Redis: with ``memory://`` the
results live inside the ``serve`` process, and the gateway must run there instead
(``dispatcher serve --with-gateway``). Stops on SIGTERM / SIGINT, closing every connection
with 1001 so browsers resume elsewhere.
"""

from __future__ import annotations

import asyncio
import signal
from urllib.parse import urlsplit

from dispatcher.backends import connect_redis
from dispatcher.config import DispatcherConfig, split_host_port
from dispatcher.errors import ConfigError
from dispatcher.heap import prepare_heap_for_serving
from dispatcher.relay.factory import open_routed_store
from dispatcher.relay.gateway import ResultGateway
from dispatcher.relay.model import ResultStore


def gateway_for(config: DispatcherConfig, store: ResultStore) -> ResultGateway:
    """A gateway over ``store`` listening where ``relay.gateway_listen`` says."""
    relay = config.relay
    host, port = split_host_port(relay.gateway_listen)
    return ResultGateway(
        store,
        host,
        port,
        keepalive_interval=relay.keepalive_interval,
        max_connections=relay.gateway_max_connections,
    )


async def run_gateway(config: DispatcherConfig) -> None:
    """Serve until SIGTERM or SIGINT; a ConfigError when the hot store is not shared."""
    if urlsplit(config.hot_store.url).scheme == "memory":
        raise ConfigError(
            "configuration",
            "hot_store.url",
            "the gateway process needs the replicas' Redis (memory:// lives inside one "
            "process: run `dispatcher serve --with-gateway` instead)",
        )
    redis = await connect_redis(config.hot_store.url, config.hot_store.connect_timeout)
    try:
        store, _ = await open_routed_store(config, redis)
    finally:
        await redis.aclose()  # the secret is read; the store holds its own connections
    gateway = gateway_for(config, store)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await gateway.start()
        prepare_heap_for_serving()
        await stop.wait()
    finally:
        await gateway.stop()
        await store.aclose()
