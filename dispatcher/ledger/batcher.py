"""Coalesce concurrent calls into batches: one round trip decides many requests.

The Python Redis client, not Redis, is the cost of a script call (DESIGN §10), so concurrent
reserve() calls of one quota family are sent as one script call that decides each request
in order. A call that finds the wire free goes out at once, in its caller's own task (no
task, no extra loop turn: the common case at low load); calls that arrive while
``max_inflight`` batches are on the wire queue, and the first of those batches to come
back sends the queue as the next one. Batches grow with load and cost nothing when idle,
as in a database's group commit.
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
        self._inflight = 0  # batches on the wire: sent alone by their caller, or drained

    async def submit(self, item: In, timeout: float | None = None) -> Out:
        """The item's result; TimeoutError after ``timeout`` seconds, queueing included. An
        item given up before its batch is sent is never sent; one already on the wire may
        still take effect (the caller cannot know, as with any timed-out call)."""
        # asyncio.timeout, not wait_for: no wrapper per call on a path taken by every Route.
        async with asyncio.timeout(timeout):
            if self._inflight < self._max_inflight and not self._queue:
                return await self._send_alone(item)
            future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
            self._queue.append((item, future))
            self._kick()
            return await future

    async def _send_alone(self, item: In) -> Out:
        self._inflight += 1
        try:
            (result,) = await self._run([item])
            return result
        finally:
            self._inflight -= 1
            self._kick()  # whoever queued behind this call goes next

    def _kick(self) -> None:
        if self._queue and self._inflight < self._max_inflight:
            self._inflight += 1
            task = asyncio.create_task(self._drain())
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._send_queued()
        finally:
            self._inflight -= 1

    async def _send_queued(self) -> None:
        size = min(len(self._queue), self._max_batch)
        batch = [self._queue.popleft() for _ in range(size)]
        batch = [(item, future) for item, future in batch if not future.done()]
        if not batch:
            return  # every caller of this batch gave up while it queued
        try:
            results = await self._run([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
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
