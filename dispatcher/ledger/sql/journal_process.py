"""``dispatcher journal``: the journal consumer as a process of its own.

With ``durable.consumer: external`` no ``serve`` process copies the hot store's journal into
SQL; one or more of these do, in the same consumer group, so a burst of history never takes
CPU from the Route path. It needs the replicas' Redis (a memory hot store lives inside one
``serve`` process). Stops on SIGTERM / SIGINT after the batch in hand; whatever is unacked
stays in the stream for the next consumer.
"""

from __future__ import annotations

import asyncio
import signal

from dispatcher.backends import open_backends
from dispatcher.config import DispatcherConfig
from dispatcher.errors import ConfigError
from dispatcher.ledger.sql.consumer import JournalConsumer
from dispatcher.ledger.sql.engine import DurableLedger
from dispatcher.ledger.sql.redis_source import RedisJournalSource


async def run_journal(config: DispatcherConfig) -> None:
    """Consume until SIGTERM or SIGINT; a ConfigError when the hot store is not Redis."""
    from dispatcher.runtime import ensure_schema

    hot = config.hot_store
    if hot.url.startswith("memory:"):
        raise ConfigError(
            "configuration",
            "hot_store.url",
            "the journal process needs the replicas' Redis (memory:// lives inside one "
            "process, whose own consumer copies it)",
        )
    backends = await open_backends(hot.url, config.durable.database_url, hot.connect_timeout)
    try:
        await ensure_schema(config.durable.database_url)
        assert backends.redis is not None, "a Redis URL opens a Redis client"
        source = RedisJournalSource(backends.redis)
        consumer = JournalConsumer(source, DurableLedger(backends.engine))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, consumer.stop)
        await consumer.run()
    finally:
        await backends.aclose()
