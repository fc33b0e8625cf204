"""Coalesce concurrent calls into batches: one round trip decides many requests.

The Python Redis client, not Redis, is the cost of a script call (DESIGN §10), so concurrent
reserve() calls of one quota family are queued and sent as one script call that decides each
request in order. Whoever arrives while a batch is in flight joins the next one; at most
``max_inflight`` batches per key are on the wire at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class Batcher(Generic[In, Out]):
    """``await batcher.submit(item)`` -> the result ``run`` produced for that item."""

    def __init__(
        self,
        run: Callable[[Sequence[In]], Awaitable[Sequence[Out]]],
        *,
        max_batch: int = 128,
        max_inflight: int = 2,
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._queue: deque[tuple[In, asyncio.Future[Out]]] = deque()
        self._drains: set[asyncio.Task[None]] = set()

    async def submit(self, item: In, timeout: float | None = None) -> Out:
        """The item's result; TimeoutError after ``timeout`` seconds, queueing included. An
        item given up before its batch is sent is never sent; one already on the wire may
        still take effect (the caller cannot know, as with any timed-out call)."""
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if len(self._drains) < self._max_inflight:
            # The task starts on the next loop turn, so callers arriving in this one join it.
            task = asyncio.create_task(self._drain())
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)
        # asyncio.timeout, not wait_for: no wrapper per call on a path taken by every Route.
        async with asyncio.timeout(timeout):
            return await future

    async def _drain(self) -> None:
        while self._queue:
            size = min(len(self._queue), self._max_batch)
            batch = [self._queue.popleft() for _ in range(size)]
            batch = [(item, future) for item, future in batch if not future.done()]
            if not batch:
                continue  # every caller of this batch gave up while it queued
            try:
                results = await self._run([item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException:
                for _, future in batch:  # shut down mid-call: nobody may wait forever
                    future.cancel()
                raise
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # the caller may have been cancelled meanwhile
                    future.set_result(result)

    async def aclose(self) -> None:
        for task in list(self._drains):
            task.cancel()
        await asyncio.gather(*self._drains, return_exceptions=True)
        while self._queue:
            _, future = self._queue.popleft()
            future.cancel()
