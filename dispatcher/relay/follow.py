"""Following one task's stream: stored events after a resume point, then live ones, with
keepalives while nothing happens. Both transports (gRPC ``AwaitResult`` and the WebSocket
gateway) relay exactly this sequence.

It pulls one page (``settings.page_size`` events) at a time and asks for the next only when
the transport has taken the previous one, so a consumer that stops reading holds at most one
page in memory here, however much the worker publishes; transport flow control (HTTP/2
windows, the WebSocket write limit) makes the transport's own send wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from dispatcher.relay.model import ResultEvent, ResultStore

DEFAULT_KEEPALIVE_INTERVAL = 15.0


async def follow(
    store: ResultStore,
    task_id: str,
    token: str,
    after: str = "",
    *,
    keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL,
) -> AsyncGenerator[ResultEvent | None, None]:
    """Yield events after ``after`` until FINAL or ERROR (inclusive); ``None`` is a keepalive.

    The first read validates everything (NotFound, PermissionDenied, InvalidArgument) before
    anything is yielded; later reads re-check, so an expired task ends the stream.
    """
    loop = asyncio.get_running_loop()
    cursor = after
    next_keepalive = loop.time() + keepalive_interval
    while True:
        page = await store.read(task_id, token, cursor)
        for event in page:
            yield event
            if event.terminal:
                return
            cursor = event.event_id
        if page:
            next_keepalive = loop.time() + keepalive_interval
            continue
        woken = await store.wait(task_id, cursor, max(0.0, next_keepalive - loop.time()))
        if not woken and loop.time() >= next_keepalive:
            yield None
            next_keepalive = loop.time() + keepalive_interval
