"""Opening the hot store and the durable ledger, with a deadline and one clear error.

At start-up the dispatcher must either reach both backends within a few seconds or exit
with one line naming the backend and the reason; it must never hang on a dead address.
URLs are shown with their passwords hidden.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from dispatcher.errors import BackendUnavailable, ConfigError
from dispatcher.ledger.sql.engine import open_engine

MEMORY_SCHEMES = ("memory",)
REDIS_SCHEMES = ("redis", "rediss", "unix")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def hot_store_kind(url: str) -> str:
    """``"memory"`` or ``"redis"``; a ConfigError for anything else."""
    scheme = urlsplit(url).scheme
    if scheme in MEMORY_SCHEMES:
        return "memory"
    if scheme in REDIS_SCHEMES:
        return "redis"
    raise ConfigError("configuration", "hot_store.url", f"unsupported scheme {scheme!r}")


async def connect_redis(url: str, timeout: float) -> redis_asyncio.Redis:
    """A client whose server answered PING within ``timeout`` seconds."""
    client = redis_asyncio.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout
    )
    try:
        await asyncio.wait_for(client.ping(), timeout)
    except (RedisError, OSError, TimeoutError) as exc:
        await client.aclose()
        reason = str(exc) or type(exc).__name__
        raise BackendUnavailable("redis", f"{redact_url(url)}: {reason}") from exc
    return client


def sqlite_file_of(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    return Path(parsed.database)


async def connect_database(url: str, timeout: float) -> AsyncEngine:
    """An engine that completed ``SELECT 1`` within ``timeout`` seconds."""
    try:
        engine = open_engine(url, connect_timeout=timeout)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError("configuration", "durable.database_url", str(exc)) from exc
    try:
        async with asyncio.timeout(timeout), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        await engine.dispose()
        reason = str(getattr(exc, "orig", None) or exc) or type(exc).__name__
        raise BackendUnavailable("database", f"{redact_url(url)}: {reason}") from exc
    return engine


@dataclass
class Backends:
    """The connections a running dispatcher holds; closed together on shutdown."""

    engine: AsyncEngine
    redis: redis_asyncio.Redis | None = None
    closed: bool = field(default=False, init=False)

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()


async def open_backends(hot_store_url: str, database_url: str, timeout: float) -> Backends:
    """Connect to the hot store, then the durable ledger; fail fast with one clear error."""
    redis_client = None
    if hot_store_kind(hot_store_url) == "redis":
        redis_client = await connect_redis(hot_store_url, timeout)
    try:
        engine = await connect_database(database_url, timeout)
    except BaseException:
        if redis_client is not None:
            await redis_client.aclose()
        raise
    return Backends(engine=engine, redis=redis_client)
