"""One Redis pub/sub subscription per process that wakes every local waiter of a task.

Why not ``XREAD BLOCK``: a blocked XREAD holds a connection for as long as it waits, so
10,000 open result streams would need 10,000 Redis connections, and one XREAD over many
streams is impossible in Redis Cluster (task keys are hash-tagged by task id, hence spread
over slots). Instead the publish script ``PUBLISH``es the task id on one channel; this hub
listens on one connection and resolves the futures of that task's waiters. A waiter holds one
future and nothing else, so memory per waiter is constant; it reads the events itself.

On Redis Cluster the script's classic ``PUBLISH`` reaches every node, so the hub may listen
on any one (redis-py picks it). A lost wake-up only delays delivery: waiters wake on their
timeout anyway, and when the subscription breaks every waiter is woken (to re-read) while the
hub reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from dispatcher.logs import get_logger
from dispatcher.redis_client import REDIS_ERRORS, AnyRedis

log = get_logger(__name__)

_BACKOFF_INITIAL = 0.1
_BACKOFF_MAX = 5.0
#: How long one read of the subscription blocks; bounds how late the listener sees a close.
_POLL_S = 0.5
#: How long ``aclose`` waits for the listener after cancelling it.
_CLOSE_WAIT_S = 2.0


class WakeHub:
    """Fan-out of task wake-ups; ``ready`` is set while the subscription is live."""

    def __init__(self, client: AnyRedis, channel: str) -> None:
        self.channel = channel
        self.ready = asyncio.Event()
        self._client = client
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        """Start listening (idempotent); needs a running loop, hence not in ``__init__``."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="relay-wakeups")

    @property
    def waiting(self) -> int:
        return sum(len(futures) for futures in self._waiters.values())

    def add(self, task_id: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, set()).add(future)
        return future

    def remove(self, task_id: str, future: asyncio.Future[None]) -> None:
        futures = self._waiters.get(task_id)
        if futures is None:
            return
        futures.discard(future)
        if not futures:
            del self._waiters[task_id]

    def wake(self, task_id: str) -> None:
        for future in self._waiters.get(task_id, ()):
            if not future.done():
                future.set_result(None)

    def wake_all(self) -> None:
        for task_id in list(self._waiters):
            self.wake(task_id)

    async def aclose(self) -> None:
        # redis-py's pub/sub read can swallow a cancellation and wait on, so the listener is
        # also told by a flag it checks between bounded reads, and waited for only so long.
        self._closing = True
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.wait({listener}, timeout=_CLOSE_WAIT_S)
            if not listener.done():
                log.warning("relay_wakeups_close_timeout", waited_s=_CLOSE_WAIT_S)
        self.wake_all()

    async def _listen(self) -> None:
        backoff = _BACKOFF_INITIAL
        while not self._closing:
            try:
                await self._subscribe_and_dispatch()
            except REDIS_ERRORS as exc:
                log.warning("relay_wakeups_lost", error=str(exc), retry_in_s=backoff)
            if self.ready.is_set():
                backoff = _BACKOFF_INITIAL  # it worked for a while: start the backoff afresh
            self.ready.clear()
            # Anything published while we were deaf is in the streams: make everyone re-read.
            self.wake_all()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _subscribe_and_dispatch(self) -> None:
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            while not self._closing:
                message = await pubsub.get_message(timeout=_POLL_S)
                if message is None:
                    continue
                kind = message.get("type")
                if kind == "subscribe":
                    # Publishes after this point reach us; earlier ones are re-read by waiters.
                    self.ready.set()
                    self.wake_all()
                elif kind == "message":
                    data = message["data"]
                    self.wake(data.decode() if isinstance(data, bytes) else str(data))
        finally:
            with contextlib.suppress(*REDIS_ERRORS, TimeoutError):
                async with asyncio.timeout(_CLOSE_WAIT_S):
                    # Through a typed name: redis-py types aclose from 8.2 on, earlier
                    # releases leave it untyped (a call strict mypy refuses).
                    close: Callable[[], Awaitable[object]] = pubsub.aclose
                    await close()
