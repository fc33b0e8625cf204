"""The sticky-session table every dispatcher replica shares (DESIGN §6.5).

A session key maps to the cluster it is pinned to and the cluster's boot id at the time, so
a restart (new boot id) is noticed and the session handed over once. Entries expire after
``ttl_s`` without use. The Redis table keeps one key per session (single-slot operations,
Redis Cluster ready) named by a digest of the session key, so a 256-byte key costs no more
than a short one, and a set per cluster for listing and bounded-load counts.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from dispatcher.errors import BackendUnavailable
from dispatcher.redis_client import REDIS_ERRORS

DEFAULT_TTL_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class SessionRecord:
    session_key: str
    cluster_id: str
    boot_id: str
    backend: str
    pinned_at: float
    last_used_at: float
    handovers: int = 0


class SessionStore(Protocol):
    async def get(self, session_key: str) -> SessionRecord | None:
        """The pin, with its idle timer restarted; None when there is none (or it expired)."""
        ...

    async def pin(
        self, session_key: str, cluster_id: str, boot_id: str, backend: str, *, handover: bool
    ) -> SessionRecord:
        """Pin the session (new, or moved when ``handover``: its handover count grows)."""
        ...

    async def sessions(
        self, cluster_id: str | None = None, limit: int = 100
    ) -> list[SessionRecord]:
        """Sessions pinned to ``cluster_id`` (all when None), at most ``limit``."""
        ...

    async def aclose(self) -> None: ...


class MemorySessionStore:
    def __init__(
        self, ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.time
    ) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._records: dict[str, SessionRecord] = {}

    async def get(self, session_key: str) -> SessionRecord | None:
        record = self._records.get(session_key)
        now = self._clock()
        if record is None or now - record.last_used_at > self.ttl_s:
            self._records.pop(session_key, None)
            return None
        record = replace(record, last_used_at=now)
        self._records[session_key] = record
        return record

    async def pin(
        self, session_key: str, cluster_id: str, boot_id: str, backend: str, *, handover: bool
    ) -> SessionRecord:
        now = self._clock()
        previous = self._records.get(session_key)
        handovers = (previous.handovers if previous else 0) + int(handover)
        record = SessionRecord(session_key, cluster_id, boot_id, backend, now, now, handovers)
        self._records[session_key] = record
        return record

    async def sessions(
        self, cluster_id: str | None = None, limit: int = 100
    ) -> list[SessionRecord]:
        now = self._clock()
        live = [r for r in self._records.values() if now - r.last_used_at <= self.ttl_s]
        chosen = [r for r in live if cluster_id is None or r.cluster_id == cluster_id]
        return sorted(chosen, key=lambda r: r.session_key)[:limit]

    async def aclose(self) -> None:
        self._records.clear()


def _texts(members: object) -> list[str]:
    """SRANDMEMBER's reply (bytes or str items) as text."""
    if not isinstance(members, list):
        return []
    return [m.decode() if isinstance(m, bytes) else str(m) for m in members]


def _digest(session_key: str) -> str:
    return hashlib.sha256(session_key.encode()).hexdigest()[:32]


class RedisSessionStore:
    """Sessions in Redis: ``<ns>:s:<digest>`` holds the record as JSON with a TTL."""

    def __init__(
        self, client: aioredis.Redis, ttl_s: float = DEFAULT_TTL_S, namespace: str = "dsp:session"
    ) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.namespace = namespace

    def _key(self, session_key: str) -> str:
        return f"{self.namespace}:s:{_digest(session_key)}"

    def _members(self, cluster_id: str) -> str:
        return f"{self.namespace}:c:{cluster_id}"

    async def get(self, session_key: str) -> SessionRecord | None:
        try:
            raw = await self.client.getex(self._key(session_key), ex=int(self.ttl_s))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable("redis", f"session lookup: {exc}") from exc
        if raw is None:
            return None
        return replace(SessionRecord(**json.loads(raw)), last_used_at=time.time())

    async def pin(
        self, session_key: str, cluster_id: str, boot_id: str, backend: str, *, handover: bool
    ) -> SessionRecord:
        key = self._key(session_key)
        try:
            previous_raw = await self.client.get(key)
            previous = SessionRecord(**json.loads(previous_raw)) if previous_raw else None
            now = time.time()
            handovers = (previous.handovers if previous else 0) + int(handover)
            record = SessionRecord(session_key, cluster_id, boot_id, backend, now, now, handovers)
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(key, json.dumps(asdict(record)), ex=int(self.ttl_s))
                if previous is not None and previous.cluster_id != cluster_id:
                    pipe.srem(self._members(previous.cluster_id), session_key)
                pipe.sadd(self._members(cluster_id), session_key)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BackendUnavailable("redis", f"session pin: {exc}") from exc
        return record

    async def sessions(
        self, cluster_id: str | None = None, limit: int = 100
    ) -> list[SessionRecord]:
        try:
            keys = await self._session_keys(cluster_id, limit)
            raws = await self._get_each([self._key(k) for k in keys])
        except REDIS_ERRORS as exc:
            raise BackendUnavailable("redis", f"session list: {exc}") from exc
        records = [SessionRecord(**json.loads(raw)) for raw in raws if raw]
        # A member whose record expired, or that moved, is not listed under this cluster.
        return [r for r in records if cluster_id is None or r.cluster_id == cluster_id][:limit]

    async def _get_each(self, keys: list[str]) -> list[str | bytes | None]:
        """GET of each key in one pipeline: an MGET may not span Redis Cluster slots."""
        if not keys:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
            return list(await pipe.execute())

    async def _session_keys(self, cluster_id: str | None, limit: int) -> list[str]:
        if cluster_id is not None:
            return sorted(_texts(await self.client.srandmember(self._members(cluster_id), limit)))
        keys: list[str] = []
        async for set_key in self.client.scan_iter(match=f"{self.namespace}:c:*", count=100):
            keys.extend(_texts(await self.client.srandmember(set_key, limit - len(keys))))
            if len(keys) >= limit:
                break
        return sorted(keys)

    async def aclose(self) -> None:
        """The client belongs to the caller; nothing of ours to close."""
