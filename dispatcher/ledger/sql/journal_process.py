"""``dispatcher journal``: the journal consumer as a process of its own.

With ``durable.consumer: external`` no ``serve`` process copies the hot store's journal into
SQL; one or more of these do, in the same consumer group, so a burst of history never takes
CPU from the Route path; with ``server.metrics_listen`` it exports its lag. It needs the
replicas' Redis (a memory hot store lives inside one
``serve`` process). Stops on SIGTERM / SIGINT after the batch in hand; whatever is unacked
stays in the stream for the next consumer.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from dispatcher.backends import open_backends
from dispatcher.config import DispatcherConfig, split_host_port
from dispatcher.errors import ConfigError
from dispatcher.heap import prepare_heap_for_serving
from dispatcher.ledger.sql.consumer import JournalConsumer
from dispatcher.ledger.sql.engine import DurableLedger
from dispatcher.ledger.sql.redis_source import RedisJournalSource

METRICS_REFRESH_S = 5.0


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
        metrics = JournalMetrics(consumer)
        if config.server.metrics_listen:
            metrics.serve(config.server.metrics_listen)
        exporter = asyncio.create_task(metrics.refresh_forever())
        prepare_heap_for_serving()
        try:
            await consumer.run()
        finally:
            exporter.cancel()
            metrics.close()
    finally:
        await backends.aclose()


class JournalMetrics:
    """Lag of this consumer, for ``server.metrics_listen`` (same names as ``serve``'s)."""

    def __init__(self, consumer: JournalConsumer) -> None:
        self.consumer = consumer
        self.registry = CollectorRegistry(auto_describe=True)
        self.pending = Gauge(
            "dispatcher_journal_pending", "Journal events not yet durable in SQL",
            registry=self.registry,
        )  # fmt: skip
        self.commit_age = Gauge(
            "dispatcher_journal_seconds_since_commit", "Seconds since the consumer's last commit",
            registry=self.registry,
        )  # fmt: skip
        self.committed = Gauge(
            "dispatcher_journal_committed", "Events this consumer committed since it started",
            registry=self.registry,
        )  # fmt: skip
        self._http: Any = None

    def serve(self, listen: str) -> None:
        host, port = split_host_port(listen)
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)

    async def refresh_forever(self) -> None:
        while True:
            lag = await self.consumer.lag()
            if lag.pending is not None:
                self.pending.set(lag.pending)
            if lag.seconds_since_commit is not None:
                self.commit_age.set(lag.seconds_since_commit)
            self.committed.set(lag.committed)
            await asyncio.sleep(METRICS_REFRESH_S)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
