"""ResultService over a real socket: the real servicer and stub, on memory and on Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from dispatcher.relay.model import EventKind, RelaySettings, ResultStore
from dispatcher.v1 import result_pb2, result_pb2_grpc
from tests.relay.conftest import MakeStore, RelayServer, eventually, start_relay_server

PROGRESS = result_pb2.RESULT_EVENT_KIND_PROGRESS
FINAL = result_pb2.RESULT_EVENT_KIND_FINAL
KEEPALIVE = result_pb2.RESULT_EVENT_KIND_KEEPALIVE


def stub_of(channel: grpc.aio.Channel) -> result_pb2_grpc.ResultServiceAsyncStub:
    return result_pb2_grpc.ResultServiceStub(channel)


def await_result(
    channel: grpc.aio.Channel, task_id: str, token: str, after: str = ""
) -> grpc.aio.UnaryStreamCall[result_pb2.AwaitResultRequest, result_pb2.ResultEvent]:
    request = result_pb2.AwaitResultRequest(
        task_id=task_id, result_token=token, after_event_id=after
    )
    return stub_of(channel).AwaitResult(request)


async def publish(
    channel: grpc.aio.Channel, task_id: str, seq: int, kind: int = PROGRESS, payload: bytes = b""
) -> result_pb2.PublishResponse:
    request = result_pb2.PublishRequest(
        task_id=task_id, kind=kind, payload=payload or f"p{seq}".encode(), sequence=seq
    )
    return await stub_of(channel).Publish(request)


async def events_of(
    call: AsyncIterator[result_pb2.ResultEvent], *, keepalives: bool = False
) -> list[result_pb2.ResultEvent]:
    return [e async for e in call if keepalives or e.kind != KEEPALIVE]


async def rpc_error(awaitable: object) -> grpc.aio.AioRpcError:
    if isinstance(awaitable, grpc.aio.UnaryStreamCall):
        awaitable = events_of(awaitable)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await awaitable  # type: ignore[misc]
    return caught.value


async def test_a_result_published_before_the_caller_connects_is_delivered(
    relay_server: RelayServer, channel: grpc.aio.Channel
) -> None:
    token = await relay_server.store.register("t1")
    first = await publish(channel, "t1", 1)
    final = await publish(channel, "t1", 2, FINAL, b'{"answer": 42}')
    events = await events_of(await_result(channel, "t1", token))
    assert [(e.event_id, e.kind) for e in events] == [
        (first.event_id, PROGRESS),
        (final.event_id, FINAL),
    ]
    assert events[1].payload == b'{"answer": 42}'
    assert events[1].published_at.seconds > 1_600_000_000


async def test_live_events_follow_the_stored_ones_until_final(
    relay_server: RelayServer, channel: grpc.aio.Channel
) -> None:
    token = await relay_server.store.register("t1")
    await publish(channel, "t1", 1)
    call = await_result(channel, "t1", token)
    stream = call.__aiter__()
    assert (await anext(stream)).payload == b"p1"
    await publish(channel, "t1", 2)
    assert (await anext(stream)).payload == b"p2"
    await publish(channel, "t1", 3, FINAL)
    rest = await events_of(stream)
    assert [e.payload for e in rest] == [b"p3"]
    assert await call.code() == grpc.StatusCode.OK


async def test_a_caller_that_disconnects_resumes_exactly_once(
    relay_server: RelayServer, channel: grpc.aio.Channel
) -> None:
    token = await relay_server.store.register("t1")
    ids = [(await publish(channel, "t1", seq)).event_id for seq in range(1, 4)]
    call = await_result(channel, "t1", token)
    seen = [e.event_id async for e in _take(call, 2)]
    call.cancel()
    ids += [(await publish(channel, "t1", seq)).event_id for seq in range(4, 6)]
    ids.append((await publish(channel, "t1", 6, FINAL)).event_id)
    resumed = await events_of(await_result(channel, "t1", token, after=seen[-1]))
    assert seen + [e.event_id for e in resumed] == ids


async def _take(
    call: AsyncIterator[result_pb2.ResultEvent], count: int
) -> AsyncIterator[result_pb2.ResultEvent]:
    async for event in call:
        if event.kind == KEEPALIVE:
            continue
        yield event
        count -= 1
        if count == 0:
            return


async def test_keepalives_arrive_while_a_long_task_runs(
    relay_server: RelayServer, channel: grpc.aio.Channel
) -> None:
    """On a 50 ms keepalive clock: an idle stream gets keepalives, then its result."""
    token = await relay_server.store.register("t1")
    call = await_result(channel, "t1", token)
    stream = call.__aiter__()
    for _ in range(5):
        event = await anext(stream)
        assert (event.kind, event.event_id) == (KEEPALIVE, "")
    await publish(channel, "t1", 1, FINAL)
    assert [e.kind for e in await events_of(stream)] == [FINAL]


@pytest.mark.parametrize(
    ("token", "code"),
    [("wrong", grpc.StatusCode.PERMISSION_DENIED), ("", grpc.StatusCode.UNAUTHENTICATED)],
)
async def test_a_wrong_or_missing_token_is_refused(
    relay_server: RelayServer, channel: grpc.aio.Channel, token: str, code: grpc.StatusCode
) -> None:
    await relay_server.store.register("t1")
    await publish(channel, "t1", 1)
    error = await rpc_error(await_result(channel, "t1", token))
    assert error.code() == code


async def test_an_unknown_task_is_not_found(channel: grpc.aio.Channel) -> None:
    error = await rpc_error(await_result(channel, "nope", "token"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("after", ["garbage", "future"])
async def test_a_malformed_or_future_event_id_is_refused(
    relay_server: RelayServer, channel: grpc.aio.Channel, after: str
) -> None:
    token = await relay_server.store.register("t1")
    last = (await publish(channel, "t1", 1)).event_id
    if after == "future":
        ms, n = last.split("-")
        after = f"{ms}-{int(n) + 1}"
    error = await rpc_error(await_result(channel, "t1", token, after=after))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    bad = error_details_pb2.BadRequest()
    assert status is not None
    assert status.details[0].Unpack(bad)
    assert bad.field_violations[0].field == "after_event_id"


async def test_a_result_over_the_cap_is_resource_exhausted_without_retry_info(
    make_store: MakeStore,
) -> None:
    store = await make_store(RelaySettings(max_bytes_per_task=1000))
    server, info = await start_relay_server(store)
    try:
        await store.register("t1")
        async with grpc.aio.insecure_channel(info.address) as channel:
            await publish(channel, "t1", 1, payload=b"x" * 600)
            error = await rpc_error(publish(channel, "t1", 2, payload=b"x" * 401))
    finally:
        await server.stop(None)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "task t1: result exceeds 1000 bytes"
    assert rpc_status.from_call(error) is None  # type: ignore[arg-type]  # no RetryInfo


async def test_publish_is_idempotent_on_sequence_and_closed_after_final(
    relay_server: RelayServer, channel: grpc.aio.Channel
) -> None:
    await relay_server.store.register("t1")
    first = await publish(channel, "t1", 1, FINAL)
    retried = await publish(channel, "t1", 1, FINAL)
    assert (retried.event_id, retried.duplicate) == (first.event_id, True)
    error = await rpc_error(publish(channel, "t1", 2))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    ("kind", "seq", "field"), [(KEEPALIVE, 1, "kind"), (0, 1, "kind"), (PROGRESS, 0, "sequence")]
)
async def test_a_bad_publish_names_its_field(
    relay_server: RelayServer, channel: grpc.aio.Channel, kind: int, seq: int, field: str
) -> None:
    await relay_server.store.register("t1")
    error = await rpc_error(publish(channel, "t1", seq, kind))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (error.details() or "")


# A client whose receive window stays at HTTP/2's 64 KiB (no BDP probing growing it to many
# MB on loopback), so the server reaches the point where flow control must stop it.
SMALL_WINDOW = (("grpc.http2.bdp_probe", 0),)


class CountingStore:
    """Counts the events each task's readers took from the store."""

    def __init__(self, inner: ResultStore) -> None:
        self.inner = inner
        self.settings = inner.settings
        self.taken: dict[str, int] = {}

    async def register(self, task_id: str, token: str | None = None) -> str:
        return await self.inner.register(task_id, token)

    async def publish(self, task_id: str, kind: EventKind, payload: bytes, ct: str, seq: int):  # type: ignore[no-untyped-def]
        return await self.inner.publish(task_id, kind, payload, ct, seq)

    async def read(self, task_id: str, token: str, after: str = "", limit: int | None = None):  # type: ignore[no-untyped-def]
        page = await self.inner.read(task_id, token, after, limit)
        self.taken[task_id] = self.taken.get(task_id, 0) + len(page)
        return page

    async def wait(self, task_id: str, after: str, timeout: float) -> bool:
        return await self.inner.wait(task_id, after, timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_slow_consumer_neither_blocks_others_nor_grows_server_memory(
    store: ResultStore,
) -> None:
    counting = CountingStore(store)
    server, info = await start_relay_server(counting)  # type: ignore[arg-type]
    events, size = 200, 32 * 1024  # 6.4 MB: far beyond HTTP/2 windows, within the 8 MiB cap
    try:
        slow_token = await counting.register("slow")
        fast_token = await counting.register("fast")
        async with (
            grpc.aio.insecure_channel(info.address, options=SMALL_WINDOW) as slow_channel,
            grpc.aio.insecure_channel(info.address) as channel,
        ):
            slow = await_result(slow_channel, "slow", slow_token)
            slow_stream = slow.__aiter__()
            for seq in range(1, events + 1):
                await publish(channel, "slow", seq, payload=bytes([seq % 256]) * size)
            await anext(slow_stream)  # the stream is open; now stop reading it
            await publish(channel, "fast", 1, FINAL)
            async with asyncio.timeout(5):
                fast = await events_of(await_result(channel, "fast", fast_token))
            assert [e.kind for e in fast] == [FINAL]
            # Flow control stopped the handler: it holds one page plus what fits in the 64 KiB
            # window, not the 6.4 MB.
            await eventually(lambda: counting.taken.get("slow", 0) > 0)
            assert counting.taken["slow"] <= store.settings.page_size + 8
            await publish(channel, "slow", events + 1, FINAL)
            rest = await events_of(slow_stream)
        # ...and the slow reader, once it reads again, still gets everything exactly once.
        assert [e.payload[0] for e in rest[:-1]] == [s % 256 for s in range(2, events + 1)]
        assert rest[-1].kind == FINAL
    finally:
        await server.stop(None)
