"""The Redis-stream journal as a ``JournalSource``: one consumer group over every journal stream.

Layout (written by the hot store's Lua scripts)::

    dsp:journal:streams        SET of journal stream keys, one per quota family
    dsp:{<family>}:journal     STREAM; entries are ``JournalEvent.to_fields()``

An event's id is ``"<family>/<entry id>"``, except for an entry a replica copied in from its
outage journal (``RedisLedger.append_journal``): its id is the ``origin`` it had there
(``"<replica id>/<n>"``, unique per process), because that copy is at-least-once — a replay
whose reply was lost is replayed again — and SQL must store the event once. ``ack`` of such
an id acks every entry that carried it. Delivery is at-least-once:

- ``read`` first replays this consumer's own unacked entries (after a restart, or when the
  caller reads again without acking), then takes over entries a crashed consumer left idle
  longer than ``claim_idle_ms`` (XAUTOCLAIM), then reads new ones (XREADGROUP ``>``).
  ``backlogged()`` says whether that read stopped at its COUNT on some stream.
- ``ack`` (XACK) comes only after the SQL commit; it then trims each stream below the oldest
  entry any group still needs (XTRIM MINID), so trimming never drops an unacked entry.
- A malformed entry is moved to ``dsp:{<family>}:journal:dead`` (same slot) and acked, so
  one bad entry neither blocks trimming nor is lost.

On a Redis Cluster each family's stream sits in its family's slot, and one XREADGROUP may
not span slots: streams are read one slot at a time, all slots in one pipeline (one round
trip per node), without BLOCK (a blocking read of one slot would starve the others); an
empty pass sleeps ``poll_ms`` instead. On a single node everything is one "slot" and one
blocking XREADGROUP reads every stream, as before.

The client must use RESP2 (redis-py's default); bytes or decoded responses both work. Keep
``block_ms`` of ``read`` below the client's socket timeout (redis-py: 5 s by default), or a
quiet journal reads as an outage. Writers must never cap the stream (XADD MAXLEN): that
would drop unacked entries; alarm on ``pending()`` instead.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from redis import exceptions as redis_exc

from dispatcher.errors import BackendUnavailable
from dispatcher.ledger.events import JournalEvent
from dispatcher.logs import get_logger
from dispatcher.redis_client import AnyRedis, key_slot

REGISTRY = "dsp:journal:streams"
GROUP = "durable-ledger"

log = get_logger(__name__)

Entry = tuple[str, dict[str, str] | None]  # entry id, fields (None: deleted while pending)
Located = tuple[str, Entry]  # stream key, entry


def stream_key(family: str) -> str:
    return f"dsp:{{{family}}}:journal"


def _location_of(event_id: str) -> list[tuple[str, str]]:
    """[(stream key, entry id)] of a ``"<family>/<ms>-<seq>"`` event id; [] for any other
    (an origin id names no stream)."""
    # rpartition: a family may contain "/" ("azure/gpt-4o"); an entry id never does.
    family, _, entry_id = event_id.rpartition("/")
    ms, dash, seq = entry_id.partition("-")
    if not family or not dash or not (ms.isdigit() and seq.isdigit()):
        return []
    return [(stream_key(family), entry_id)]


def family_of(key: str) -> str:
    """The hash tag of a journal stream key: ``dsp:{eu-gpt4o}:journal`` -> ``eu-gpt4o``."""
    start, end = key.find("{"), key.find("}")
    if start < 0 or end <= start + 1:
        raise ValueError(f"not a journal stream key: {key!r}")
    return key[start + 1 : end]


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@asynccontextmanager
async def redis_errors(action: str) -> AsyncIterator[None]:
    try:
        yield
    except (
        redis_exc.ConnectionError,
        redis_exc.TimeoutError,
        redis_exc.RedisClusterException,  # an unreachable cluster (not a RedisError)
        OSError,
    ) as exc:
        raise BackendUnavailable("redis", f"{action}: {type(exc).__name__}: {exc}") from exc


class RedisJournalSource:
    """Drains every registered journal stream through the consumer group ``group``."""

    def __init__(
        self,
        client: AnyRedis,
        *,
        consumer: str | None = None,
        group: str = GROUP,
        registry: str = REGISTRY,
        claim_idle_ms: int = 30_000,
        refresh_s: float = 1.0,
        trim_every_s: float = 1.0,
        poll_ms: int = 100,
    ) -> None:
        self.client = client
        self.consumer = consumer or default_consumer_name()
        self.group = group
        self.registry = registry
        self.claim_idle_ms = claim_idle_ms
        self._refresh_s = refresh_s
        self._trim_every_s = trim_every_s
        self._poll_ms = poll_ms
        self._streams: list[str] = []
        self._by_slot: list[list[str]] = []  # streams one XREADGROUP may read together
        self._grouped: set[str] = set()
        self._refreshed_at = float("-inf")
        self._claimed_at = float("-inf")
        self._claim_cursor: dict[str, str] = {}
        self._trimmed_at: dict[str, float] = {}
        # Event ids handed out by read() and not acked yet: while there are any, read()
        # replays this consumer's pending entries instead of reading new ones.
        self._outstanding: set[str] = set()
        # Event id -> the stream entries it was read from (several for a replayed origin).
        self._entries: dict[str, list[tuple[str, str]]] = {}
        self._replay = True  # a restarted consumer first finishes what it had taken
        self._backlogged = False  # the last read stopped at COUNT on some stream

    async def read(self, batch: int, block_ms: int) -> list[JournalEvent]:
        async with redis_errors("read journal"):
            self._backlogged = False
            await self._refresh_streams()
            if not self._streams:
                # Nothing journalled yet: wait as XREADGROUP would, or the caller spins.
                await asyncio.sleep(max(0, block_ms) / 1000)
                return []
            if self._replay or self._outstanding:
                entries = await self._read_group("0", batch, block_ms=None)
                if entries:
                    return await self._to_events(entries)
                self._replay = False
            entries = await self._autoclaim(batch)
            if not entries:
                entries = await self._read_group(">", batch, block_ms)
            return await self._to_events(entries)

    def backlogged(self) -> bool:
        return self._backlogged

    async def ack(self, event_ids: Sequence[str]) -> None:
        by_key: dict[str, list[str]] = defaultdict(list)
        for event_id in event_ids:
            # Unknown here (read by an earlier incarnation): a stream entry's id says where
            # it is; a replayed event's origin id does not, and is acked when read again.
            located = self._entries.get(event_id) or _location_of(event_id)
            for key, entry_id in located:
                by_key[key].append(entry_id)
        async with redis_errors("ack journal"):
            async with self.client.pipeline(transaction=False) as pipe:
                for key, ids in by_key.items():
                    pipe.xack(key, self.group, *ids)
                await pipe.execute()
            # Forgotten only once acked: a failed ack is retried with the same ids.
            for event_id in event_ids:
                self._entries.pop(event_id, None)
            self._outstanding.difference_update(event_ids)
            for key in by_key:
                await self._maybe_trim(key)

    async def pending(self) -> int:
        """Entries not acked yet: pending in the group plus not yet delivered."""
        async with redis_errors("journal lag"):
            await self._refresh_streams()
            total = 0
            for key in self._streams:
                total += await self._unacked(key)
            return total

    async def trim(self, key: str) -> None:
        """Drop entries of ``key`` that every consumer group has acked."""
        floor: tuple[int, int] | None = None
        if not await self.client.exists(key):
            return  # nothing journalled there yet (or the stream was deleted): nothing to trim
        for info in await self.client.xinfo_groups(key):
            needed = await self._oldest_needed(key, info)
            floor = needed if floor is None else min(floor, needed)
        if floor is not None:
            await self.client.xtrim(key, minid=f"{floor[0]}-{floor[1]}", approximate=False)
        self._trimmed_at[key] = time.monotonic()

    async def _oldest_needed(self, key: str, info: dict[Any, Any]) -> tuple[int, int]:
        # Every entry below the oldest pending one was delivered and, not being pending,
        # acked. With nothing pending, everything up to last-delivered-id is acked. New
        # entries only get larger ids, so reading these two without a lock is safe.
        if info["pending"]:
            summary = await self.client.xpending(key, _text(info["name"]))
            if summary["min"] is not None:
                return _parse_id(_text(summary["min"]))
        ms, seq = _parse_id(_text(info["last-delivered-id"]))
        return (ms, seq + 1) if seq < 2**64 - 1 else (ms + 1, 0)

    async def _maybe_trim(self, key: str) -> None:
        if time.monotonic() - self._trimmed_at.get(key, float("-inf")) >= self._trim_every_s:
            await self.trim(key)

    async def _unacked(self, key: str) -> int:
        for info in await self.client.xinfo_groups(key):
            if _text(info["name"]) == self.group:
                lag = info.get("lag")
                # lag is nil when Redis cannot count it; the stream length bounds it.
                undelivered = lag if lag is not None else await self.client.xlen(key)
                return int(info["pending"]) + int(undelivered)
        return int(await self.client.xlen(key))

    async def _refresh_streams(self) -> None:
        if time.monotonic() - self._refreshed_at < self._refresh_s:
            return
        members: Any = await self.client.smembers(self.registry)
        keys = sorted(_text(k) for k in members)
        for key in keys:
            if key not in self._grouped:
                await self._create_group(key)
        self._streams = keys
        slots: dict[int, list[str]] = defaultdict(list)
        for key in keys:
            slots[key_slot(self.client, key)].append(key)
        self._by_slot = list(slots.values())
        self._refreshed_at = time.monotonic()

    async def _create_group(self, key: str) -> None:
        try:
            # From id 0: entries journalled before the group existed are history too.
            await self.client.xgroup_create(key, self.group, id="0", mkstream=True)
        except redis_exc.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._grouped.add(key)

    def _per_stream(self, batch: int) -> int:
        # COUNT applies per stream; split the batch so one read stays within it.
        return max(1, batch // max(1, len(self._streams)))

    async def _read_group(self, start: str, batch: int, block_ms: int | None) -> list[Located]:
        count = self._per_stream(batch)
        try:
            if len(self._by_slot) == 1:
                replies = [await self._read_slot(self._by_slot[0], start, count, block_ms)]
            else:
                replies = await self._read_slots(start, count)
        except redis_exc.ResponseError as exc:
            if "NOGROUP" in str(exc):
                # The stream was deleted (e.g. FLUSHDB); re-create its group on next read.
                self._grouped.clear()
                self._refreshed_at = float("-inf")
                raise BackendUnavailable("redis", f"journal group missing: {exc}") from exc
            raise
        found: list[Located] = []
        for reply in replies:
            for key, entries in reply or []:
                self._backlogged = self._backlogged or len(entries) >= count
                found += [(_text(key), e) for e in _entries(entries)]
        if not found and block_ms and block_ms > 0 and len(self._by_slot) > 1:
            await asyncio.sleep(min(block_ms, self._poll_ms) / 1000)
        return found

    async def _read_slot(
        self, streams: list[str], start: str, count: int, block_ms: int | None
    ) -> Any:
        return await self.client.xreadgroup(
            self.group,
            self.consumer,
            dict.fromkeys(streams, start),
            count=count,
            block=block_ms if block_ms and block_ms > 0 else None,  # BLOCK 0 waits forever
        )

    async def _read_slots(self, start: str, count: int) -> list[Any]:
        async with self.client.pipeline(transaction=False) as pipe:
            for streams in self._by_slot:
                pipe.xreadgroup(
                    self.group, self.consumer, dict.fromkeys(streams, start), count=count
                )
            replies: list[Any] = await pipe.execute()
        return replies

    async def _autoclaim(self, batch: int) -> list[Located]:
        # At most every half idle period: XAUTOCLAIM scans the PEL, too costly per read.
        now = time.monotonic()
        if (now - self._claimed_at) * 1000 < self.claim_idle_ms / 2:
            return []
        self._claimed_at = now
        found: list[Located] = []
        for key in self._streams:
            cursor = self._claim_cursor.get(key, "0-0")
            reply = await self.client.xautoclaim(
                key,
                self.group,
                self.consumer,
                self.claim_idle_ms,
                cursor,
                count=self._per_stream(batch),
            )
            self._claim_cursor[key] = _text(reply[0])
            found.extend((key, e) for e in _entries(reply[1]))
            self._backlogged = self._backlogged or len(reply[1]) >= self._per_stream(batch)
        return found

    async def _to_events(self, entries: list[Located]) -> list[JournalEvent]:
        events: list[JournalEvent] = []
        for key, (entry_id, fields) in entries:
            event_id = (fields or {}).get("origin") or f"{family_of(key)}/{entry_id}"
            try:
                if fields is None:
                    raise ValueError("entry deleted while pending")
                events.append(JournalEvent.from_fields(event_id, fields))
            except (ValueError, KeyError) as exc:
                await self._dead_letter(key, entry_id, fields or {}, exc)
                continue
            located = self._entries.setdefault(event_id, [])
            if (key, entry_id) not in located:
                located.append((key, entry_id))
        self._outstanding.update(e.event_id for e in events)
        return events

    async def _dead_letter(
        self, key: str, entry_id: str, fields: dict[str, str], exc: Exception
    ) -> None:
        log.error(
            "journal entry unreadable; moved aside", stream=key, entry=entry_id, error=str(exc)
        )
        async with self.client.pipeline(transaction=True) as pipe:
            kept: dict[Any, Any] = {**fields, "_entry": entry_id, "_error": str(exc)[:500]}
            pipe.xadd(f"{key}:dead", kept)
            pipe.xack(key, self.group, entry_id)
            await pipe.execute()


def _entries(raw: Any) -> list[Entry]:
    return [(_text(entry_id), _fields(fields)) for entry_id, fields in raw]


def _fields(fields: Mapping[Any, Any] | None) -> dict[str, str] | None:
    """An entry's fields as text. One reply is all bytes or all text (the client's
    ``decode_responses``): decoding without a type test per field took a quarter off this
    step, which runs for every event the consumer reads."""
    if fields is None:
        return None
    try:
        return {k.decode(): v.decode() for k, v in fields.items()}
    except AttributeError:  # a decoding client's str (or anything else): as text
        return {_text(k): _text(v) for k, v in fields.items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
