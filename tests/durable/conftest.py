"""Fixtures for the durable ledger: private PostgreSQL databases, SQLite files, Redis clients.

The shared ``test`` database may be used by other suites at the same time, so these tests
create their own databases (``CREATE DATABASE dsp_durable_<random>``) and drop them after.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from dispatcher.ledger.events import EventKind, JournalEvent
from dispatcher.ledger.sql import migrate
from dispatcher.ledger.sql.engine import DurableLedger, open_engine
from dispatcher.ledger.sql.redis_source import REGISTRY, RedisJournalSource, stream_key
from tests.conftest import admin_dsn

TABLES = ("journal_events", "reservations", "pool_limits", "route_weights", "breaker_settings")


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(
    params=[
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("sqlite"),
    ]
)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty ledger database: a private PostgreSQL one, or a SQLite file."""
    # Sync on purpose: the session fixture it may pull in runs its own event loop.
    if request.param == "sqlite":
        url = sqlite_url(tmp_path / "var" / "ledger.db")
        asyncio.run(migrate.upgrade(url))
        return url
    url = str(request.getfixturevalue("migrated_pg_url"))
    asyncio.run(_truncate(url))
    return url


async def _truncate(url: str) -> None:
    conn = await asyncpg.connect(admin_dsn(url))
    try:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)}")
    finally:
        await conn.close()


@pytest.fixture
async def ledger(ledger_url: str) -> AsyncIterator[DurableLedger]:
    durable = DurableLedger(open_engine(ledger_url))
    try:
        yield durable
    finally:
        await durable.aclose()


@pytest.fixture
async def pg_ledger(migrated_pg_url: str) -> AsyncIterator[DurableLedger]:
    """The PostgreSQL ledger alone (consumer tests), emptied first."""
    await _truncate(migrated_pg_url)
    durable = DurableLedger(open_engine(migrated_pg_url))
    try:
        yield durable
    finally:
        await durable.aclose()


@pytest.fixture
async def redis_client(redis_db: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_db)
    try:
        yield client
    finally:
        await client.aclose()


def closed_port() -> int:
    """A local TCP port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def lifecycle(rid: str, at: float, n: int = 0) -> list[JournalEvent]:
    """reserved -> dispatched -> usage -> settled for one reservation (ids filled by callers)."""
    pools = ("azure-openai/eastus2/gpt-4o",)
    cost = {pools[0]: {"requests": 1, "tokens": 1200}}
    return [
        JournalEvent(
            f"t/{rid}/1",
            EventKind.RESERVED,
            at,
            rid,
            pools,
            {"request_id": f"req-{n}", "candidate_id": "eu-1", "cost": cost},
        ),
        JournalEvent(f"t/{rid}/2", EventKind.DISPATCHED, at + 1, rid, pools, {}),
        JournalEvent(f"t/{rid}/3", EventKind.USAGE, at + 2, rid, pools, {"usage": {"tokens": 300}}),
        JournalEvent(
            f"t/{rid}/4",
            EventKind.SETTLED,
            at + 3,
            rid,
            pools,
            {"outcome": "ok", "usage": {"tokens": 900}},
        ),
    ]


@dataclass(frozen=True)
class Names:
    """Per-test registry and family names: other suites may share Redis db 15 concurrently."""

    tag: str

    @property
    def registry(self) -> str:
        return f"{REGISTRY}:{self.tag}"

    def family(self, name: str) -> str:
        return f"{name}-{self.tag}"

    def source(
        self, client: aioredis.Redis, consumer: str = "c1", claim_idle_ms: int = 30_000
    ) -> RedisJournalSource:
        return RedisJournalSource(
            client,
            consumer=consumer,
            registry=self.registry,
            claim_idle_ms=claim_idle_ms,
            refresh_s=0,
            trim_every_s=0,
        )

    async def journal(
        self, client: aioredis.Redis, family: str, events: list[JournalEvent]
    ) -> list[str]:
        """Append ``events`` to ``family``'s stream as the Lua writer would; returns ids."""
        return await journal(client, family, events, self.registry)


@pytest.fixture
def names() -> Names:
    return Names(uuid.uuid4().hex[:8])


async def journal(
    client: aioredis.Redis, family: str, events: list[JournalEvent], registry: str = REGISTRY
) -> list[str]:
    """Append ``events`` to the family's stream as the Lua writer would; returns event ids."""
    key = stream_key(family)
    await client.sadd(registry, key)  # type: ignore[misc]
    ids: list[str] = []
    for event in events:
        entry_id = await client.xadd(key, event.to_fields())  # type: ignore[arg-type]
        ids.append(f"{family}/{entry_id.decode()}")
    return ids


async def eventually(
    probe: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``probe`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
