"""Routed tasks' result streams open on first use, not on the Route path.

A routed task's token is derived from its id (``relay.tokens``), so no replica needs to
write anything when it routes: the first Publish by the worker, or the first read by a
caller holding the right token, opens the stream. That keeps a Redis round trip (and its
client cost, the largest part of a Route's) off every decision.

A read of a stream that does not exist yet with a token that is not the task's is
PermissionDenied, like a read of an existing one: without the token nobody learns whether
a task exists. Only a first read (no ``after``) opens: a stream that expired under a reader
stays gone, so the reader gets NotFound instead of waiting on a new, empty stream.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from dispatcher.errors import NotFound, PermissionDenied
from dispatcher.relay.model import EventKind, Published, RelaySettings, ResultEvent, ResultStore
from dispatcher.relay.tokens import TaskTokens


class RoutedResultStore:
    """A ``ResultStore`` over ``store`` that opens a routed task's stream when first used."""

    def __init__(self, store: ResultStore, tokens: TaskTokens) -> None:
        self.store = store
        self.tokens = tokens
        self.settings: RelaySettings = store.settings

    async def register(self, task_id: str, token: str | None = None) -> str:
        return await self.store.register(task_id, token)

    async def publish(
        self, task_id: str, kind: EventKind, payload: bytes, content_type: str, sequence: int
    ) -> Published:
        try:
            return await self.store.publish(task_id, kind, payload, content_type, sequence)
        except NotFound:
            await self.store.register(task_id, self.tokens.of(task_id))
            return await self.store.publish(task_id, kind, payload, content_type, sequence)

    async def read(
        self, task_id: str, token: str, after: str = "", limit: int | None = None
    ) -> Sequence[ResultEvent]:
        try:
            return await self.store.read(task_id, token, after, limit)
        except NotFound:
            if after:
                # The reader saw events, so the stream existed and has expired since:
                # opening it again would have the reader wait for ever on an empty one.
                raise
            expected = self.tokens.of(task_id)
            if not hmac.compare_digest(token, expected):
                raise PermissionDenied(f"wrong result token for task {task_id}") from None
            await self.store.register(task_id, expected)
            return await self.store.read(task_id, token, after, limit)

    async def wait(self, task_id: str, after: str, timeout: float) -> bool:
        return await self.store.wait(task_id, after, timeout)

    async def aclose(self) -> None:
        await self.store.aclose()
