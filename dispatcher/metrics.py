"""Prometheus metrics of one dispatcher replica, served over HTTP at ``server.metrics_listen``.

Counters and the reserve histogram are updated on the request path. Gauges that need a
hot-store read (pool remaining, heartbeat age, journal lag) are refreshed by a background
loop every few seconds instead of on scrape, so a slow Redis never stalls a scrape and a
scrape never adds load to the Route path.
Each server owns its own ``CollectorRegistry``; tests may run several in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from dispatcher.config import split_host_port
from dispatcher.errors import DispatcherError
from dispatcher.logs import get_logger
from dispatcher.loop_metrics import LoopCounter, LoopHistogram

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from dispatcher.runtime import Runtime

log = get_logger(__name__)

REFRESH_INTERVAL_S = 5.0
RESERVE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
RPC_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._http: WSGIServer | None = None
        r = self.registry
        # The Route path's series (one decision count per Route, one reserve time, and one
        # RPC time per Route and Release) are the event loop's own: ``loop_metrics``.
        self.decisions = LoopCounter(
            "dispatcher_decisions",
            "Routing decisions",
            ["outcome", "cluster", "backend"],
            registry=r,
        )
        self.spillovers = Counter(
            "dispatcher_spillovers",
            "Decisions that skipped a full cluster",
            ["from_cluster"],
            registry=r,
        )
        self.denials = Counter(
            "dispatcher_denials", "Route calls refused for lack of quota", ["route"], registry=r
        )
        self.reserve_seconds = LoopHistogram(
            "dispatcher_reserve_seconds",
            "Hot-store reserve latency",
            buckets=RESERVE_BUCKETS,
            registry=r,
        ).labels()
        self.rpc_seconds = LoopHistogram(
            "dispatcher_rpc_seconds",
            "Time a RoutingService call spent in its handler, by method and status code",
            ["method", "code"],
            buckets=RPC_BUCKETS,
            registry=r,
        )
        self.pool_remaining = Gauge(
            "dispatcher_pool_remaining",
            "Quota a new reservation may take now",
            ["pool", "dim"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "dispatcher_breaker_state",
            "0 closed, 1 half-open, 2 open",
            ["agent_version"],
            registry=r,
        )
        self.heartbeat_age = Gauge(
            "dispatcher_heartbeat_age_seconds",
            "Seconds since a cluster's last report",
            ["cluster"],
            registry=r,
        )
        self.journal_pending = Gauge(
            "dispatcher_journal_pending", "Journal events not yet durable in SQL", registry=r
        )
        self.journal_commit_age = Gauge(
            "dispatcher_journal_seconds_since_commit",
            "Seconds since the consumer's last commit",
            registry=r,
        )

    def count_decision(self, outcome: str, cluster_id: str, backend: str) -> None:
        """One Route's decision."""
        self.decisions.labels(outcome, cluster_id, backend).inc()

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        """One call's time in its handler (``rpc.handlers.unary`` reports it)."""
        self.rpc_seconds.labels(method, code).observe(seconds)

    async def refresh(self, runtime: Runtime) -> None:
        """Read the hot store once and set every gauge."""
        for pool in runtime.config.pools:
            snapshot = await runtime.ledger.snapshot(pool.id)
            for dim, values in snapshot.dims.items():
                self.pool_remaining.labels(pool.id, dim).set(values.remaining - values.debt)
        now = time.time()
        for state in await runtime.registry.list():
            self.heartbeat_age.labels(state.id).set(max(0.0, now - state.last_seen))
        lag = await runtime.consumer.lag()
        if lag.pending is not None:
            self.journal_pending.set(lag.pending)
        if runtime.config.durable.consumer == "external":
            # Commits happen in `dispatcher journal`, which exports this itself; a 0 here
            # would read as healthy.
            self.journal_commit_age.set(float("nan"))
        elif lag.seconds_since_commit is not None:
            self.journal_commit_age.set(lag.seconds_since_commit)

    async def refresh_forever(self, runtime: Runtime, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.refresh(runtime)
            except DispatcherError as exc:
                log.warning("metrics refresh failed", reason=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REFRESH_INTERVAL_S)

    def serve(self, listen: str) -> int:
        """Start the HTTP endpoint in a daemon thread; returns the bound port."""
        host, port = split_host_port(listen)
        self._http, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
