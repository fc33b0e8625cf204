"""RoutedResultStore: a routed task's stream opens on its first use, and only then."""

from __future__ import annotations

import pytest

from dispatcher.errors import NotFound, PermissionDenied
from dispatcher.relay.memory import MemoryResultStore
from dispatcher.relay.model import EventKind
from dispatcher.relay.routed import RoutedResultStore
from dispatcher.relay.tokens import TaskTokens
from tests.clock import FakeClock

TOKENS = TaskTokens(b"0123456789abcdef0123456789abcdef")


async def test_a_stream_that_expired_under_its_reader_is_not_opened_again() -> None:
    clock = FakeClock(1_000.0)
    store = RoutedResultStore(MemoryResultStore(clock=clock), TOKENS)
    token = TOKENS.of("task-1")
    published = await store.publish("task-1", EventKind.PROGRESS, b"half", "text/plain", 1)
    (event,) = await store.read("task-1", token)
    assert event.event_id == published.event_id
    clock.advance(store.settings.ttl + 1)
    with pytest.raises(NotFound):
        await store.read("task-1", token, after=event.event_id)
    assert await store.read("task-1", token) == []  # a first read opens it anew, empty


async def test_a_wrong_token_opens_nothing_and_learns_nothing() -> None:
    store = RoutedResultStore(MemoryResultStore(), TOKENS)
    with pytest.raises(PermissionDenied):
        await store.read("task-2", "guess")
    with pytest.raises(PermissionDenied):  # still not opened: the same answer again
        await store.read("task-2", "guess")
    assert await store.read("task-2", TOKENS.of("task-2")) == []
