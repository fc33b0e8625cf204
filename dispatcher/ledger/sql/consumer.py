"""The journal consumer: copies hot-store journal events into the durable ledger.

One cycle: read a batch from the ``JournalSource``, write it to the sink in one transaction,
ack only after the commit. Any step that raises ``BackendUnavailable`` is retried with
exponential backoff and full jitter while the batch stays unacked at the source, so an SQL
(or Redis) outage delays history but loses nothing (DESIGN §7.4). A crash between commit and
ack makes the source deliver the batch again; the sink's idempotent insert ignores it.

Usage::

    consumer = JournalConsumer(RedisJournalSource(redis), DurableLedger(open_engine(url)))
    task = asyncio.create_task(consumer.run())
    ...
    consumer.stop()          # finish the current batch, then return
    await task               # (or task.cancel(): the batch in hand stays unacked)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from dispatcher.errors import BackendUnavailable
from dispatcher.ledger.events import JournalEvent
from dispatcher.ledger.journal import JournalSource
from dispatcher.logs import get_logger

log = get_logger(__name__)

_T = TypeVar("_T")


class EventSink(Protocol):
    """Where events go; ``DurableLedger`` is one. Idempotent on ``event_id``."""

    async def write_events(self, events: Sequence[JournalEvent]) -> int:
        """Store ``events`` in one transaction; return how many were new."""
        ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: many replicas retrying do not move in step."""

    base_s: float = 0.05
    cap_s: float = 5.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        return rand() * min(self.cap_s, self.base_s * 2.0 ** min(attempt, 32))


@dataclass(frozen=True, slots=True)
class ConsumerLag:
    """Lag metrics: ``pending`` unacked at the source; ``last_commit_at`` unix seconds."""

    pending: int | None
    last_commit_at: float | None
    seconds_since_commit: float | None
    committed: int
    duplicates: int
    retries: int
    last_error: str | None


class _Stopped(Exception):
    """stop() was called while waiting to retry."""


class JournalConsumer:
    """Drains one ``JournalSource`` into one ``EventSink`` until stopped or cancelled."""

    def __init__(
        self,
        source: JournalSource,
        sink: EventSink,
        *,
        batch: int = 1000,
        block_ms: int = 500,
        linger_s: float = 0.05,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.sink = sink
        self.batch = batch
        self.block_ms = block_ms
        self.linger_s = linger_s
        self.backoff = backoff or Backoff()
        self._clock = clock
        self._stopping = asyncio.Event()
        self._last_commit_at: float | None = None
        self._committed = 0
        self._duplicates = 0
        self._retries = 0
        self._last_error: str | None = None

    async def run(self) -> None:
        """Consume until :meth:`stop`. Cancellation propagates; unacked events stay at source."""
        log.info("journal consumer started", batch=self.batch)
        try:
            while not self._stopping.is_set():
                if await self.step() and not self.source.backlogged():
                    await self._linger()
        except _Stopped:
            pass
        log.info("journal consumer stopped", committed=self._committed)

    async def _linger(self) -> None:
        """After a batch that did not fill its read, let events gather a moment: a commit
        (an fsync on SQLite) and each round trip cost as much whether they carry ten events
        or three hundred, so small batches spent most of the consumer's CPU on them. Never
        while the source is backlogged (a read stopped at its count: a consumer behind must
        not sleep). History lags by at most ``linger_s`` more."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.linger_s)

    def stop(self) -> None:
        """Return from :meth:`run` after the batch in hand (or at once if only retrying)."""
        self._stopping.set()

    async def step(self) -> int:
        """One cycle: read, write, ack. Returns the number of events handled."""
        events = await self._until_done("read", lambda: self.source.read(self.batch, self.block_ms))
        if not events:
            return 0
        inserted = await self._until_done("write", lambda: self.sink.write_events(events))
        self._last_commit_at = self._clock()
        self._committed += inserted
        self._duplicates += len(events) - inserted
        ids = [e.event_id for e in events]
        await self._until_done("ack", lambda: self.source.ack(ids))
        return len(events)

    async def lag(self) -> ConsumerLag:
        """A metrics snapshot; ``pending`` is ``None`` while the source is unreachable."""
        try:
            pending: int | None = await self.source.pending()
        except BackendUnavailable:
            pending = None
        last = self._last_commit_at
        return ConsumerLag(
            pending=pending,
            last_commit_at=last,
            seconds_since_commit=None if last is None else max(0.0, self._clock() - last),
            committed=self._committed,
            duplicates=self._duplicates,
            retries=self._retries,
            last_error=self._last_error,
        )

    async def _until_done(self, what: str, action: Callable[[], Awaitable[_T]]) -> _T:
        attempt = 0
        while True:
            try:
                result = await action()
            except BackendUnavailable as exc:
                self._retries += 1
                self._last_error = str(exc)
                delay = self.backoff.delay(attempt)
                log.warning("journal consumer retrying", step=what, error=str(exc), delay=delay)
                await self._pause(delay)
                attempt += 1
            else:
                self._last_error = None
                return result

    async def _pause(self, seconds: float) -> None:
        # Wait on the stop event, not a bare sleep, so stop() does not wait out a long backoff.
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return
        raise _Stopped
