"""The relay in process memory: the embedded default, and the reference the Redis store matches.

Publishing is synchronous between awaits, so the sequence check, the byte cap and the append
are one atomic step without a lock. Waiters sleep on one ``asyncio.Condition`` per task and
hold nothing but their place in it; they read events themselves, so a slow reader never makes
the store buffer on its behalf.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dispatcher.errors import AlreadyExists, FailedPrecondition, NotFound, PermissionDenied
from dispatcher.relay.model import (
    EventKind,
    Published,
    RelaySettings,
    ResultEvent,
    ResultTooLarge,
    check_after,
    check_task_id,
    format_event_id,
    new_token,
    parse_event_id,
    token_digest,
    token_matches,
)

_SWEEP_BATCH = 64


@dataclass
class _Task:
    digest: str
    expires_at: float
    events: list[ResultEvent] = field(default_factory=list)
    positions: list[tuple[int, int]] = field(default_factory=list)  # parsed ids, for bisect
    by_sequence: dict[int, str] = field(default_factory=dict)
    stored_bytes: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def last_id(self) -> str | None:
        return self.events[-1].event_id if self.events else None

    @property
    def closed_by(self) -> ResultEvent | None:
        return self.events[-1] if self.events and self.events[-1].terminal else None

    def index_after(self, after: str) -> int:
        return bisect.bisect_right(self.positions, parse_event_id(after)) if after else 0


class MemoryResultStore:
    """``ResultStore`` in a dict; ``clock`` (epoch seconds) is injectable for TTL tests."""

    def __init__(
        self, settings: RelaySettings | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings or RelaySettings()
        self._clock = clock
        # Ordered by last touch, so expired tasks are found at the front without a scan.
        self._tasks: OrderedDict[str, _Task] = OrderedDict()

    async def register(self, task_id: str, token: str | None = None) -> str:
        check_task_id(task_id)
        self._sweep()
        existing = self._live(task_id)
        if existing is not None:
            if token is not None and token_matches(token, existing.digest):
                return token
            raise AlreadyExists(f"task {task_id} is already registered")
        token = token or new_token()
        self._tasks[task_id] = _Task(token_digest(token), self._clock() + self.settings.ttl)
        return token

    async def publish(
        self, task_id: str, kind: EventKind, payload: bytes, content_type: str, sequence: int
    ) -> Published:
        task = self._existing(task_id)
        known = task.by_sequence.get(sequence)
        if known is not None:
            return Published(known, duplicate=True)
        closed_by = task.closed_by
        if closed_by is not None:
            raise FailedPrecondition(
                f"task {task_id} already ended ({closed_by.kind.value} {closed_by.event_id})"
            )
        if task.stored_bytes + len(payload) > self.settings.max_bytes_per_task:
            raise ResultTooLarge(task_id, self.settings.max_bytes_per_task)
        event = self._append(task, kind, payload, content_type)
        task.by_sequence[sequence] = event.event_id
        self._touch(task_id, task)
        async with task.changed:
            task.changed.notify_all()
        return Published(event.event_id, duplicate=False)

    def _append(
        self, task: _Task, kind: EventKind, payload: bytes, content_type: str
    ) -> ResultEvent:
        # Same rule as Redis stream ids: milliseconds, never going back, then a counter.
        now_ms = int(self._clock() * 1000)
        last = task.positions[-1] if task.positions else (0, -1)
        position = (now_ms, 0) if now_ms > last[0] else (last[0], last[1] + 1)
        event = ResultEvent(
            format_event_id(*position), kind, payload, content_type, position[0] / 1000
        )
        task.events.append(event)
        task.positions.append(position)
        task.stored_bytes += len(payload)
        return event

    async def read(
        self, task_id: str, token: str, after: str = "", limit: int | None = None
    ) -> Sequence[ResultEvent]:
        task = self._existing(task_id)
        if not token_matches(token, task.digest):
            raise PermissionDenied(f"wrong result token for task {task_id}")
        check_after(after, task.last_id)
        start = task.index_after(after)
        return task.events[start : start + (limit or self.settings.page_size)]

    async def wait(self, task_id: str, after: str, timeout: float) -> bool:
        task = self._live(task_id)
        if task is None:
            return True  # the caller's next read reports NotFound
        start = task.index_after(after)
        try:
            async with asyncio.timeout(timeout), task.changed:
                await task.changed.wait_for(lambda: len(task.events) > start)
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        self._tasks.clear()

    def _existing(self, task_id: str) -> _Task:
        check_task_id(task_id)
        task = self._live(task_id)
        if task is None:
            raise NotFound("task", task_id)
        return task

    def _live(self, task_id: str) -> _Task | None:
        task = self._tasks.get(task_id)
        if task is not None and task.expires_at <= self._clock():
            del self._tasks[task_id]
            return None
        return task

    def _touch(self, task_id: str, task: _Task) -> None:
        task.expires_at = self._clock() + self.settings.ttl
        self._tasks.move_to_end(task_id)

    def _sweep(self) -> None:
        """Drop a few expired tasks from the front; amortised O(1) per registration."""
        now = self._clock()
        for _ in range(_SWEEP_BATCH):
            if not self._tasks:
                return
            task_id, task = next(iter(self._tasks.items()))
            if task.expires_at > now:
                return
            del self._tasks[task_id]
