"""The journal seam: where the durable-ledger consumer reads hot-store events from.

``JournalSource`` is all the SQL consumer needs. Delivery is at-least-once: ``read`` returns
the oldest unacked events in journal order, and reading again before ``ack`` returns them
again; the consumer inserts idempotently on ``event_id``, commits, then acks.

``data`` conventions per :class:`~dispatcher.ledger.events.EventKind` (costs and usage are
dicts of their dataclass fields; ``cost``/``charged``/``adjustment`` map pool id -> cost):

- ``reserved``: request_id, candidate_id, candidate_index, spilled_from, cost,
  lease_expires_at
- ``dispatched``: {}            ``extended``: lease_expires_at
- ``usage``: delta, usage (running total), charged
- ``settled``: outcome, usage, charged, adjustment, late
- ``released``: refunded (pool -> cost given back)
- ``abandoned``: from_state, refunded (bool: true only if never dispatched)
- ``reconciled``: observed_at, levels (dim -> level after), blocked_until
- ``limits_set``: limits (dim -> limit, null = no longer enforced)
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from dispatcher.ledger.events import EventKind, JournalEvent


class JournalSource(Protocol):
    """A journal the durable-ledger consumer drains."""

    async def read(self, batch: int, block_ms: int) -> list[JournalEvent]:
        """Up to ``batch`` oldest unacked events; wait up to ``block_ms`` if there are none."""
        ...

    async def ack(self, event_ids: Sequence[str]) -> None:
        """Mark events durable; unknown or already acked ids are ignored."""
        ...

    async def pending(self) -> int:
        """How many events are not acked yet (the lag to alarm on)."""
        ...

    def backlogged(self) -> bool:
        """Whether the last ``read`` stopped at its count limit, so more may be waiting at
        once: the consumer reads on without lingering."""
        ...


class MemoryJournal:
    """In-process journal: a list append under the caller's critical section."""

    def __init__(self, prefix: str | None = None) -> None:
        # Ids must never repeat across processes or restarts: SQL stores an id once and
        # would silently drop a later process's "mem/1".
        self._prefix = prefix or f"mem-{uuid.uuid4().hex[:12]}"
        self._seq = itertools.count(1)
        self._unacked: deque[JournalEvent] = deque()
        self._acked: set[str] = set()
        self._arrived = asyncio.Event()
        self._backlogged = False

    def append(
        self,
        kind: EventKind,
        at: float,
        reservation_id: str | None = None,
        pool_ids: Iterable[str] = (),
        data: Mapping[str, Any] | None = None,
    ) -> JournalEvent:
        """Record one mutation; synchronous so it shares the mutation's critical section."""
        event = JournalEvent(
            f"{self._prefix}/{next(self._seq)}",
            kind,
            at,
            reservation_id,
            tuple(pool_ids),
            data or {},
        )
        self._unacked.append(event)
        self._arrived.set()
        return event

    def unacked(self) -> list[JournalEvent]:
        return [e for e in self._unacked if e.event_id not in self._acked]

    def has_unacked(self) -> bool:
        """``bool(unacked())`` without building the list (asked after every hot-store call).
        Acked ids are always among the held events, so the counts tell."""
        return len(self._unacked) > len(self._acked)

    async def read(self, batch: int, block_ms: int) -> list[JournalEvent]:
        if not self.unacked() and block_ms > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), block_ms / 1000)
            except TimeoutError:
                return []
        unacked = self.unacked()
        self._backlogged = len(unacked) > batch
        return unacked[:batch]

    def backlogged(self) -> bool:
        return self._backlogged

    async def ack(self, event_ids: Sequence[str]) -> None:
        live = {e.event_id for e in self._unacked}
        self._acked.update(i for i in event_ids if i in live)
        # Drop the acked prefix so memory stays bounded by the unacked tail.
        while self._unacked and self._unacked[0].event_id in self._acked:
            self._acked.discard(self._unacked.popleft().event_id)

    async def pending(self) -> int:
        return len(self._unacked) - len(self._acked)
