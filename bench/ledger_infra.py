"""What the ledger bench stands on: its own redis-server, its own SQL database, the journal
consumer that copies events into it, and the audit copy of every Redis journal entry."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from dispatcher.ledger.events import JournalEvent
from dispatcher.ledger.journal import JournalSource
from dispatcher.ledger.model import PoolSpec
from dispatcher.ledger.redis_backend import RedisLedger
from dispatcher.ledger.redis_codec import RedisKeys, event_from_entry, family_of_stream
from dispatcher.ledger.sql import migrate
from dispatcher.ledger.sql.consumer import JournalConsumer
from dispatcher.ledger.sql.engine import EVENTS, DurableLedger, open_engine
from dispatcher.ledger.sql.redis_source import RedisJournalSource

#: A second consumer group that never acks: trimming keeps every entry for the audit.
AUDIT_GROUP = "bench-audit"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RedisServer:
    url: str
    process: subprocess.Popen[bytes] | None  # None: a server we do not own

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)


@contextlib.asynccontextmanager
async def redis_server(url: str | None) -> AsyncIterator[RedisServer]:
    """``url`` (which must be empty), or a redis-server of our own on a free loopback port."""
    if url is not None:
        client = aioredis.Redis.from_url(url)
        try:
            if await client.dbsize():
                raise SystemExit(f"bench: {url} is not empty; give an empty database")
        finally:
            await client.aclose()
        yield RedisServer(url, None)
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench: redis-server not found; install it or pass --redis-url")
    port = free_port()
    proc = _spawn_redis(binary, port)
    server = RedisServer(f"redis://127.0.0.1:{port}/0", proc)
    try:
        await _wait_for_redis(server.url, proc)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)  # a paused server ignores SIGTERM until resumed
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _spawn_redis(binary: str, port: int) -> subprocess.Popen[bytes]:
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    args += ["no", "--dir", tempfile.gettempdir(), "--loglevel", "warning"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _wait_for_redis(url: str, proc: subprocess.Popen[bytes]) -> None:
    client = aioredis.Redis.from_url(url, socket_timeout=1.0)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                await client.ping()
                return
            except (OSError, aioredis.RedisError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("bench: redis-server did not start") from None
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def sql_database(url: str) -> AsyncIterator[str]:
    """A fresh database at head: ``dsp_bench_<random>`` on a PostgreSQL server (dropped at
    the end), or the SQLite file ``url`` names (which must not exist yet)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        await migrate.upgrade(url)
        yield url
        return
    import asyncpg  # type: ignore[import-untyped]

    admin = parsed.set(drivername="postgresql").render_as_string(False)
    name = f"dsp_bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    db_url = parsed.set(database=name).render_as_string(False)
    try:
        await migrate.upgrade(db_url)
        yield db_url
    finally:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def prepare_redis(url: str, pools: Sequence[PoolSpec]) -> list[str]:
    """Seed the pools, register the journal streams and give each an audit group."""
    ledger = await RedisLedger.open(url, pools, timeout_s=5.0)
    await ledger.aclose()
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        streams = sorted(_text(k) for k in await client.smembers(RedisKeys().streams))
        for stream in streams:
            await client.xgroup_create(stream, AUDIT_GROUP, id="0", mkstream=True)
    finally:
        await client.aclose()
    return streams


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class AuditedEvent:
    event: JournalEvent
    origin: str | None  # the local journal id of an event replayed after an outage


async def read_audit(url: str, streams: Sequence[str]) -> list[AuditedEvent]:
    """Every entry ever appended to the journal streams (the audit group kept them all)."""
    client = aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=30)
    found: list[AuditedEvent] = []
    try:
        for stream in streams:
            family, start = family_of_stream(stream), "-"
            while entries := await client.xrange(stream, start, "+", count=10_000):
                for raw_id, raw_fields in entries:
                    fields = {_text(k): _text(v) for k, v in (raw_fields or {}).items()}
                    event = event_from_entry(family, _text(raw_id), fields)
                    found.append(AuditedEvent(event, fields.get("origin")))
                start = "(" + _text(entries[-1][0])
    finally:
        await client.aclose()
    return found


async def open_leases(url: str, families: Sequence[str]) -> int:
    client = aioredis.Redis.from_url(url, socket_timeout=5)
    try:
        return sum([await client.zcard(RedisKeys().leases(f)) for f in families])
    finally:
        await client.aclose()


class Drain:
    """The real JournalConsumer copying ``source`` into a DurableLedger, as a task."""

    def __init__(self, source: JournalSource, db_url: str) -> None:
        self.source = source
        self.durable = DurableLedger(open_engine(db_url))
        self.consumer = JournalConsumer(source, self.durable, batch=2000, block_ms=200)
        self.task = asyncio.create_task(self.consumer.run())

    @classmethod
    def from_redis(cls, url: str, db_url: str) -> tuple[Drain, aioredis.Redis]:
        client = aioredis.Redis.from_url(url, socket_timeout=5.0)
        return cls(RedisJournalSource(client, consumer="bench"), db_url), client

    async def settle(self, timeout_s: float) -> bool:
        """Wait until nothing is pending at the source; then stop. False on timeout."""
        deadline = time.monotonic() + timeout_s
        settled = False
        while time.monotonic() < deadline and not self.task.done():
            with contextlib.suppress(Exception):
                if await self.source.pending() == 0:
                    settled = True
                    break
            await asyncio.sleep(0.2)
        self.consumer.stop()
        try:
            await asyncio.wait_for(self.task, 10)
        except TimeoutError:
            settled = False
        return settled

    async def rows(self) -> list[dict[str, Any]]:
        async with self.durable.engine.connect() as conn:
            result = await conn.execute(select(EVENTS))
            return [dict(r) for r in result.mappings().all()]

    async def count(self) -> int:
        async with self.durable.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(EVENTS))).scalar_one())

    async def aclose(self) -> None:
        if not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.durable.aclose()
