"""The relay in Redis Streams, shared by every dispatcher replica.

Layout (the task id is the hash tag, so one task's keys share a Redis Cluster slot and each
script touches one slot)::

    {ns}:{<task id>}:meta    hash    token digest, stored bytes, last id, final kind + id
    {ns}:{<task id>}:events  stream  k (kind), p (payload), c (content type)
    {ns}:{<task id>}:seqs    hash    publisher sequence -> event id (retried publishes)
    {ns}:wake                channel task ids, published by publish.lua (see ``wakeups``)

Every key expires ``ttl`` after the task's last publish (or its registration). One Lua script
per operation (``lua/``): register, publish (sequence check, end check, byte cap and XADD in
one atomic step) and read (token check and one XRANGE page). redis-py's ``Script`` reloads a
script on NOSCRIPT. Redis errors leave this module only as ``BackendUnavailable``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

from dispatcher.errors import (
    AlreadyExists,
    BackendUnavailable,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
)
from dispatcher.redis_client import REDIS_ERRORS, AnyRedis, client_from_url
from dispatcher.relay.model import (
    EventKind,
    Published,
    RelaySettings,
    ResultEvent,
    ResultTooLarge,
    check_after,
    check_task_id,
    new_token,
    parse_event_id,
    token_digest,
)
from dispatcher.relay.wakeups import WakeHub

DEFAULT_NAMESPACE = "dispatcher:relay"


def _lua(name: str) -> str:
    return (resources.files("dispatcher.relay") / "lua" / f"{name}.lua").read_text()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except REDIS_ERRORS as exc:  # (builtin TimeoutError is an OSError)
        raise BackendUnavailable("redis", f"{type(exc).__name__}: {exc}") from exc


def _event(entry_id: Any, fields: Sequence[Any]) -> ResultEvent:
    # XRANGE inside a script returns each entry as [id, [field, value, ...]].
    values = {_text(fields[i]): fields[i + 1] for i in range(0, len(fields), 2)}
    event_id = _text(entry_id)
    return ResultEvent(
        event_id=event_id,
        kind=EventKind(_text(values["k"])),
        payload=bytes(values["p"]),
        content_type=_text(values["c"]),
        published_at=parse_event_id(event_id, "event_id")[0] / 1000,
    )


class RedisResultStore:
    """``ResultStore`` on a Redis or Redis Cluster client (``decode_responses=False``).

    The client is not owned unless the store came from :meth:`open` (prefer that: redis-py's
    default pool raises past 100 concurrent calls, and every open stream reads). The wake-up
    listener starts on the first ``wait`` and keeps one connection of the pool.
    """

    def __init__(
        self,
        client: AnyRedis,
        settings: RelaySettings | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        owns_client: bool = False,
    ) -> None:
        self.settings = settings or RelaySettings()
        self.namespace = namespace
        self._client = client
        self._owns_client = owns_client
        self._register = client.register_script(_lua("register"))
        self._publish = client.register_script(_lua("publish"))
        self._read = client.register_script(_lua("read"))
        self.hub = WakeHub(client, f"{namespace}:wake")

    @classmethod
    async def open(
        cls,
        url: str,
        settings: RelaySettings | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        timeout: float = 3.0,
        max_connections: int = 64,
    ) -> RedisResultStore:
        """A store with its own pool, on one server or a Redis Cluster (``redis+cluster://``,
        see ``dispatcher.redis_client``). On one server the pool blocks: thousands of streams
        reading at once queue for ``max_connections`` connections (a call takes ~0.1 ms)
        instead of failing."""
        with _translated():
            client = client_from_url(url, timeout_s=timeout, max_connections=max_connections)
        try:
            with _translated():
                await asyncio.wait_for(client.ping(), timeout)
        except BaseException:
            await client.aclose()
            raise
        return cls(client, settings, namespace, owns_client=True)

    def _keys(self, task_id: str) -> list[str]:
        prefix = f"{self.namespace}:{{{task_id}}}"
        return [f"{prefix}:meta", f"{prefix}:events", f"{prefix}:seqs"]

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.settings.ttl * 1000))

    async def register(self, task_id: str, token: str | None = None) -> str:
        check_task_id(task_id)
        chosen = token or new_token()
        with _translated():
            outcome = _text(
                await self._register(self._keys(task_id)[:1], [token_digest(chosen), self._ttl_ms])
            )
        if outcome == "taken" or (outcome == "same" and token is None):
            raise AlreadyExists(f"task {task_id} is already registered")
        return chosen

    async def publish(
        self, task_id: str, kind: EventKind, payload: bytes, content_type: str, sequence: int
    ) -> Published:
        check_task_id(task_id)
        args = [
            kind.value, payload, content_type, sequence, self.settings.max_bytes_per_task,
            self._ttl_ms, self.hub.channel, task_id,
        ]  # fmt: skip
        with _translated():
            reply = await self._publish(self._keys(task_id), args)
        status = _text(reply[0])
        if status in ("ok", "dup"):
            return Published(_text(reply[1]), duplicate=status == "dup")
        if status == "closed":
            ended = f"{_text(reply[1])} {_text(reply[2])}"
            raise FailedPrecondition(f"task {task_id} already ended ({ended})")
        if status == "toolarge":
            raise ResultTooLarge(task_id, self.settings.max_bytes_per_task)
        raise NotFound("task", task_id)

    async def read(
        self, task_id: str, token: str, after: str = "", limit: int | None = None
    ) -> Sequence[ResultEvent]:
        check_task_id(task_id)
        if after:
            parse_event_id(after)  # before Redis sees it: a bad id must not become a Redis error
        start = f"({after}" if after else "-"
        count = limit or self.settings.page_size
        with _translated():
            reply = await self._read(self._keys(task_id)[:2], [token_digest(token), start, count])
        status = _text(reply[0])
        if status == "notfound":
            raise NotFound("task", task_id)
        if status == "denied":
            raise PermissionDenied(f"wrong result token for task {task_id}")
        check_after(after, _text(reply[1]) or None)
        return [_event(entry_id, fields) for entry_id, fields in reply[2]]

    async def wait(self, task_id: str, after: str, timeout: float) -> bool:
        self.hub.start()
        future = self.hub.add(task_id)
        try:
            # Registered before looking, so a publish after the look still wakes us.
            if await self._has_after(task_id, after):
                return True
            if not self.hub.ready.is_set():
                # No subscription yet (start-up or outage): poll instead of sleeping blind.
                timeout = min(timeout, 1.0)
            try:
                async with asyncio.timeout(timeout):
                    await future
            except TimeoutError:
                return False
            return True
        finally:
            self.hub.remove(task_id, future)

    async def _has_after(self, task_id: str, after: str) -> bool:
        with _translated():
            last = await self._client.hget(self._keys(task_id)[0], "last")
        if last is None:
            return False
        return not after or parse_event_id(_text(last), "last") > parse_event_id(after)

    async def aclose(self) -> None:
        await self.hub.aclose()
        if self._owns_client:
            await self._client.aclose()
