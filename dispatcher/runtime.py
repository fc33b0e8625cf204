"""Everything one dispatcher replica holds while it runs, opened and closed in order.

``Runtime.open`` connects the backends, brings the durable ledger's schema up to date (the
embedded SQLite ledger is migrated automatically; a PostgreSQL ledger must already be at the
head revision, which ``dispatcher migrate`` does), opens the hot-store ledger, the cluster
registry, the session table and the result relay's store, and starts the background loops:
the journal consumer (hot store -> SQL), the lease sweeper, metrics and the fleet refresh.
``aclose`` stops them and closes everything in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from dispatcher import config as cfg
from dispatcher import intake
from dispatcher.backends import Backends, open_backends, redact_url, sqlite_file_of
from dispatcher.errors import BackendUnavailable, FailedPrecondition
from dispatcher.fleet.hub import DirectiveHub
from dispatcher.fleet.memory import MemoryClusterRegistry
from dispatcher.fleet.model import UsageReport
from dispatcher.fleet.redis_registry import RedisClusterRegistry
from dispatcher.fleet.registry import ClusterRegistry, RegistrySettings
from dispatcher.fleet.sessions import MemorySessionStore, RedisSessionStore, SessionStore
from dispatcher.ledger import FailureMode, Ledger, Mode, Observation, PoolSpec, open_ledger
from dispatcher.ledger.journal import JournalSource
from dispatcher.ledger.memory import MemoryLedger
from dispatcher.ledger.sql import migrate
from dispatcher.ledger.sql.consumer import JournalConsumer
from dispatcher.ledger.sql.engine import DurableLedger
from dispatcher.ledger.sql.redis_source import RedisJournalSource
from dispatcher.ledger.sweeper import sweep
from dispatcher.logs import get_logger
from dispatcher.metrics import Metrics
from dispatcher.relay import ResultStore
from dispatcher.relay.factory import open_routed_store
from dispatcher.relay.tokens import TaskTokens
from dispatcher.router import Router

log = get_logger(__name__)


def ledger_pools(pools: Sequence[cfg.PoolSpec]) -> list[PoolSpec]:
    """The ledger's view of the configured pools."""
    return [
        PoolSpec(
            id=p.id,
            family=p.quota_family,
            rpm=p.rpm,
            tpm=p.tpm,
            input_tpm=p.input_tpm,
            output_tpm=p.output_tpm,
            tpd=p.tpd,
            mode=Mode(p.mode),  # the config's literals are the enum's values
            burst=p.burst,
            safety_factor=p.safety_factor,
            output_weight=p.output_weight,
            refund_unused=p.refund_unused,
            failure_mode=FailureMode(p.failure_mode),
            static_share=p.static_share,
        )
        for p in pools
    ]


async def ensure_schema(database_url: str) -> None:
    """Migrate an embedded SQLite ledger; insist a shared database is already migrated."""
    if sqlite_file_of(database_url) is not None:
        await migrate.upgrade(database_url)
        return
    at, heads = await migrate.current(database_url), migrate.heads()
    if at not in heads:
        raise FailedPrecondition(
            f"durable ledger {redact_url(database_url)} is at revision {at or 'none'}, "
            f"expected {', '.join(heads)}: run `dispatcher migrate` first"
        )


async def apply_persisted_limits(
    ledger: Ledger, durable: DurableLedger, config: cfg.DispatcherConfig
) -> None:
    """Operator-set limits outlive restarts: SQL holds them, the hot store gets them back."""
    configured = {p.id for p in config.pools}
    for pool_id, record in (await durable.pool_limits()).items():
        if pool_id in configured:
            await ledger.set_limits(pool_id, record.limits)
        else:
            log.warning("persisted limits for a pool no longer configured", pool=pool_id)


def journal_source(ledger: Ledger, backends: Backends) -> JournalSource:
    if isinstance(ledger, MemoryLedger):
        return ledger.journal
    assert backends.redis is not None, "a non-memory ledger implies a Redis hot store"
    return RedisJournalSource(backends.redis)


def open_registry(config: cfg.DispatcherConfig, backends: Backends) -> ClusterRegistry:
    settings = RegistrySettings(
        interval=config.routing.heartbeat_interval,
        stale_after_intervals=config.routing.stale_after_intervals,
        known_pools=frozenset(p.id for p in config.pools) or None,
    )
    if backends.redis is not None:
        return RedisClusterRegistry(backends.redis, settings)
    return MemoryClusterRegistry(settings)


def open_sessions(backends: Backends) -> SessionStore:
    if backends.redis is not None:
        return RedisSessionStore(backends.redis)
    return MemorySessionStore()


def refresh_interval(config: cfg.DispatcherConfig) -> float:
    """How often each replica re-reads the fleet: a fraction of the heartbeat interval, so
    a report is seen well before the next one, and at most once a second."""
    return min(1.0, config.routing.heartbeat_interval / 4)


async def open_relay(
    config: cfg.DispatcherConfig, backends: Backends
) -> tuple[ResultStore, TaskTokens]:
    """The result store and the token scheme every replica shares (``relay.tokens``)."""
    return await open_routed_store(config, backends.redis)


@dataclass
class Runtime:
    config: cfg.DispatcherConfig
    backends: Backends
    ledger: Ledger
    durable: DurableLedger
    consumer: JournalConsumer
    registry: ClusterRegistry
    sessions: SessionStore
    results: ResultStore
    router: Router
    hub: DirectiveHub = field(default_factory=DirectiveHub)
    metrics: Metrics = field(default_factory=Metrics)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _settings_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def open(cls, config: cfg.DispatcherConfig) -> Runtime:
        hot = config.hot_store
        backends = await open_backends(hot.url, config.durable.database_url, hot.connect_timeout)
        try:
            await ensure_schema(config.durable.database_url)
            ledger = await open_ledger(
                hot.url,
                ledger_pools(config.pools),
                replicas=hot.replicas,
                timeout_s=hot.call_timeout,
                connect_timeout_s=hot.connect_timeout,
            )
        except BaseException:
            await backends.aclose()
            raise
        durable = DurableLedger(backends.engine)
        try:
            await apply_persisted_limits(ledger, durable, config)
            results, tokens = await open_relay(config, backends)
        except BaseException:
            await ledger.aclose()
            await backends.aclose()
            raise
        registry, sessions, metrics = (
            open_registry(config, backends),
            open_sessions(backends),
            Metrics(),
        )
        runtime = cls(
            config=config,
            backends=backends,
            ledger=ledger,
            durable=durable,
            consumer=JournalConsumer(journal_source(ledger, backends), durable),
            registry=registry,
            sessions=sessions,
            results=results,
            router=Router(config, ledger, registry, sessions, metrics, tokens=tokens),
            metrics=metrics,
        )
        try:
            await runtime.sync_settings()  # operators' weights and thresholds from the start
        except BaseException:
            await runtime.aclose()
            raise
        runtime._start_loops()
        return runtime

    async def sync_settings(self) -> bool:
        """Apply the operator settings the durable ledger holds; True if any changed.
        One at a time: the loop's read must not land after an operator's newer change."""
        async with self._settings_lock:
            weights = await self.durable.route_weights()
            breakers = await self.durable.breaker_settings()
            return self.router.apply_settings(weights, breakers)

    async def _sync_settings_forever(self) -> None:
        """Once per heartbeat interval: what any replica's operator set applies here too."""
        interval = self.config.routing.heartbeat_interval
        while not self._stop.is_set():
            try:
                if await self.sync_settings():
                    log.info("operator settings applied")
            except BackendUnavailable as exc:  # keep the last ones until SQL answers
                log.warning("operator settings not read", reason=str(exc))
            except Exception:  # a bad read must not end the loop that keeps replicas in step
                log.exception("operator settings not applied")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)

    def _start_loops(self) -> None:
        self._tasks = []
        if self.config.durable.consumer == "embedded":
            self._tasks.append(asyncio.create_task(self.consumer.run(), name="journal-consumer"))
        self._tasks += [
            asyncio.create_task(sweep(self.ledger, self._stop), name="lease-sweeper"),
            asyncio.create_task(self.metrics.refresh_forever(self, self._stop), name="metrics"),
            asyncio.create_task(
                self.router.refresh_forever(self._stop, refresh_interval(self.config)),
                name="fleet-refresh",
            ),
            asyncio.create_task(self._sync_settings_forever(), name="operator-settings"),
        ]

    async def apply_usage(self, cluster_id: str, reports: Sequence[UsageReport]) -> list[str]:
        return await intake.apply_usage(self.ledger, cluster_id, reports)

    async def apply_observations(
        self, cluster_id: str, observations: Sequence[tuple[str, Observation]]
    ) -> None:
        await intake.apply_observations(self.ledger, cluster_id, observations)

    async def aclose(self) -> None:
        """Stop the loops (the consumer finishes the batch in hand), then close backends."""
        self._stop.set()
        self.consumer.stop()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await asyncio.wait_for(task, timeout=5.0)
                except TimeoutError:
                    log.warning("background loop did not stop in time", loop=task.get_name())
        self._tasks = []
        self.metrics.close()
        await self.results.aclose()
        await self.sessions.aclose()
        await self.registry.aclose()
        await self.ledger.aclose()
        await self.backends.aclose()
