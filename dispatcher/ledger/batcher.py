"""Coalesce concurrent calls into batches: one round trip decides many requests.

The Python Redis client, not Redis, is the cost of a script call (DESIGN §10), so concurrent
reserve() calls of one quota family are sent as one script call that decides each request
in order. A call that finds the wire free goes out at once, in its caller's own task (no
task, no extra loop turn: the common case at low load); calls that arrive while
``max_inflight`` batches are on the wire queue, and the first of those batches to come
back sends the queue as the next one. Batches grow with load and cost nothing when idle,
as in a database's group commit.

``run(items, deadline)`` gets the loop time by which its callers give up (``None``: no
limit) and must honour it itself, raising by then: a call sent alone arms no timer of its
own here, so each call on the Route path has one timer (its connection's), not two.

Queued calls share one timer too (``expiry.DeadlineTimer``): armed for the earliest deadline
in the queue, it fails every queued call whose deadline has passed and re-arms for the next.
Once sent, a call waits as long as its batch, whose deadline is its
most patient caller's: at most the time the batch spent queueing past the call's own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from dispatcher.ledger.expiry import DeadlineTimer, fail_overdue

In = TypeVar("In")
Out = TypeVar("Out")


class Batcher(Generic[In, Out]):
    """``await batcher.submit(item)`` -> the result ``run`` produced for that item."""

    def __init__(
        self,
        run: Callable[[Sequence[In], float | None], Awaitable[Sequence[Out]]],
        *,
        max_batch: int = 128,
        max_inflight: int = 2,
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._queue: deque[tuple[In, float | None, asyncio.Future[Out]]] = deque()
        self._drains: set[asyncio.Task[None]] = set()
        self._inflight = 0  # batches on the wire: sent alone by their caller, or drained
        self._loop: asyncio.AbstractEventLoop | None = None
        self._expiry = DeadlineTimer(self._expire_queued)  # the queue's one timer

    def _bound_loop(self) -> asyncio.AbstractEventLoop:
        """The loop this batcher runs on, looked up once (and again after it closed: a test's
        next loop). ``asyncio.get_running_loop()`` makes a ``getpid()`` system call on every
        call (CPython 3.11's fork check), and each Route and Release would ask."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    async def submit(self, item: In, timeout: float | None = None) -> Out:
        """The item's result; TimeoutError once ``timeout`` seconds pass while it queues, or
        when its batch's deadline passes (see the module's docstring). An item given up
        before its batch is sent is never sent; one already on the wire may still take
        effect (the caller cannot know, as with any timed-out call)."""
        loop = self._bound_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if self._inflight < self._max_inflight and not self._queue:
            return await self._send_alone(item, deadline)
        future: asyncio.Future[Out] = loop.create_future()
        self._queue.append((item, deadline, future))
        if deadline is not None:
            self._expiry.arm(loop, deadline)
        self._kick()
        return await future

    def _expire_queued(self) -> None:
        """Fail each queued item whose deadline passed (a batch not yet sent leaves it out:
        it sends only items whose future is not done); re-arm for the earliest left."""
        loop = self._bound_loop()
        _, earliest = fail_overdue(((d, future) for _, d, future in self._queue), loop.time())
        if earliest is not None:
            self._expiry.arm(loop, earliest)

    async def _send_alone(self, item: In, deadline: float | None) -> Out:
        self._inflight += 1
        try:
            (result,) = await self._run([item], deadline)
            return result
        finally:
            self._inflight -= 1
            self._kick()  # whoever queued behind this call goes next

    def _kick(self) -> None:
        if self._queue and self._inflight < self._max_inflight:
            self._inflight += 1
            task = self._bound_loop().create_task(self._drain())
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
        queued = [self._queue.popleft() for _ in range(size)]
        live = [(item, d, future) for item, d, future in queued if not future.done()]
        if not live:
            return  # every caller of this batch gave up while it queued
        batch = [(item, future) for item, _, future in live]
        # The batch may run as long as its most patient caller waits (see the docstring).
        deadlines = [d for _, d, _ in live if d is not None]
        deadline = max(deadlines) if len(deadlines) == len(live) else None
        try:
            results = await self._run([item for item, _ in batch], deadline)
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
        self._expiry.cancel()
        for task in list(self._drains):
            task.cancel()
        await asyncio.gather(*self._drains, return_exceptions=True)
        while self._queue:
            _, _, future = self._queue.popleft()
            future.cancel()
