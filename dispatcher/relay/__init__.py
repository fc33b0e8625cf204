"""The result relay (DESIGN §1, §5): results of tasks that outlive any connection.

A worker publishes PROGRESS events and one FINAL (or ERROR) per task; the caller follows the
task's stream with the task's token, over gRPC (``rpc/result_service.py``) or WebSocket
(``gateway.py``), and resumes after the last event id it saw, with no loss and no duplicate.

    store = await open_result_store(config.hot_store.url, RelaySettings(ttl=86400))
    token = await store.register(task_id)  # routed tasks need not: RoutedResultStore opens
    await store.publish(task_id, EventKind.FINAL, b"...", "application/json", sequence=3)
    async for event in follow(store, task_id, token, after=last_seen): ...

Modules: ``model`` (events, ids, tokens, settings, the ``ResultStore`` protocol), ``memory``
and ``redis_store`` (the two backends, one contract suite), ``wakeups`` (Redis fan-out of
new-event notices), ``follow`` (the stream both transports relay), ``gateway`` (WebSocket),
``routed`` (routed tasks' streams open on first use, from their derived tokens).
"""

from dispatcher.relay.factory import open_result_store
from dispatcher.relay.follow import DEFAULT_KEEPALIVE_INTERVAL, follow
from dispatcher.relay.memory import MemoryResultStore
from dispatcher.relay.model import (
    EventKind,
    Published,
    RelaySettings,
    ResultEvent,
    ResultStore,
    ResultTooLarge,
    new_token,
)
from dispatcher.relay.redis_store import RedisResultStore

__all__ = [
    "DEFAULT_KEEPALIVE_INTERVAL",
    "EventKind",
    "MemoryResultStore",
    "Published",
    "RedisResultStore",
    "RelaySettings",
    "ResultEvent",
    "ResultStore",
    "ResultTooLarge",
    "follow",
    "new_token",
    "open_result_store",
]
