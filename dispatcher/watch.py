"""Live events of one replica for ``AdminService.Watch`` (``dispatchctl watch``, the demo).

The router, the breakers and the admin service publish; each watcher has its own bounded
queue. Publishing never waits: a watcher that cannot keep up loses its oldest events (counted in
``dropped``), so a stalled terminal can never slow routing down. ``close`` ends every
watcher's stream, so a shutdown does not wait its grace period on open ``watch`` calls. History is
the journal's business (SQL views); this is only the live tail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum

DEFAULT_QUEUE = 1000


class WatchKind(StrEnum):
    DECISION = "decision"
    SPILLOVER = "spillover"
    BREAKER = "breaker"
    HANDOVER = "handover"
    DRAIN = "drain"
    EJECTION = "ejection"
    LIMITS = "limits"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: WatchKind
    summary: str
    cluster_id: str = ""
    pool_id: str = ""
    agent_version: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


CLOSED = WatchEvent(WatchKind.DRAIN, "the dispatcher is stopping")


class Watcher:
    """One subscriber's queue; ``dropped`` counts events it lost by falling behind."""

    def __init__(self, kinds: frozenset[WatchKind], size: int) -> None:
        self.kinds = kinds
        self.queue: asyncio.Queue[WatchEvent] = asyncio.Queue(size)
        self.dropped = 0

    def offer(self, event: WatchEvent) -> None:
        if self.kinds and event.kind not in self.kinds:
            return
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)

    async def events(self) -> AsyncIterator[WatchEvent]:
        while (event := await self.queue.get()) is not CLOSED:
            yield event

    def close(self) -> None:
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(CLOSED)


class WatchHub:
    def __init__(self, queue_size: int = DEFAULT_QUEUE) -> None:
        self._watchers: set[Watcher] = set()
        self._queue_size = queue_size

    @property
    def watching(self) -> bool:
        return bool(self._watchers)

    def __len__(self) -> int:
        return len(self._watchers)

    def publish(self, event: WatchEvent) -> None:
        for watcher in self._watchers:
            watcher.offer(event)

    def close(self) -> None:
        """End every watcher's stream (the server is stopping)."""
        for watcher in self._watchers:
            watcher.close()

    @asynccontextmanager
    async def watch(self, kinds: frozenset[WatchKind] = frozenset()) -> AsyncIterator[Watcher]:
        watcher = Watcher(kinds, self._queue_size)
        self._watchers.add(watcher)
        try:
            yield watcher
        finally:
            self._watchers.discard(watcher)
