"""``await_result`` against the real ResultServicer: delivery, resume after breaks, refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from dispatcher.client import DispatcherClient, RetryPolicy
from dispatcher.relay.memory import MemoryResultStore
from dispatcher.relay.model import EventKind
from dispatcher.rpc.result_service import ResultServicer
from dispatcher.v1 import result_pb2, result_pb2_grpc
from tests.client.conftest import RecordedSleep

KEEPALIVE = result_pb2.RESULT_EVENT_KIND_KEEPALIVE
FINAL = result_pb2.RESULT_EVENT_KIND_FINAL


class BreakingProxy(result_pb2_grpc.ResultServiceServicer):
    """The real servicer behind a 'proxy' that breaks each of the first ``breaks`` streams
    after ``every`` events, with ``code`` (UNAVAILABLE, INTERNAL as an RST_STREAM, or
    CANCELLED as a stopping replica or the transport ends a stream)."""

    def __init__(self, real: ResultServicer, breaks: int, every: int, code: grpc.StatusCode):
        self.real = real
        self.breaks = breaks
        self.every = every
        self.code = code
        self.resumed_after: list[str] = []

    async def Publish(self, request: Any, context: Any) -> Any:
        return await self.real.Publish(request, context)

    async def AwaitResult(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.resumed_after.append(request.after_event_id)
        sent = 0
        async for event in self.real.AwaitResult(request, context):
            if self.breaks > 0 and sent == self.every:
                self.breaks -= 1
                message = (
                    "Received RST_STREAM with error code 2" if self.code.value[0] == 13 else ""
                )
                await context.abort(self.code, message or "proxy went away")
            yield event
            sent += event.kind != KEEPALIVE


@pytest.fixture
def store() -> MemoryResultStore:
    return MemoryResultStore()


async def serve(servicer: result_pb2_grpc.ResultServiceServicer) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    result_pb2_grpc.add_ResultServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def publish_task(store: MemoryResultStore, task_id: str, count: int) -> tuple[str, list[str]]:
    token = await store.register(task_id)
    ids = []
    for seq in range(1, count + 1):
        kind = EventKind.FINAL if seq == count else EventKind.PROGRESS
        ids.append((await store.publish(task_id, kind, str(seq).encode(), "", seq)).event_id)
    return token, ids


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED]
)
async def test_a_broken_stream_resumes_from_the_last_event_with_no_loss_or_duplicate(
    store: MemoryResultStore, code: grpc.StatusCode
) -> None:
    token, ids = await publish_task(store, "t1", 10)
    proxy = BreakingProxy(ResultServicer(store), breaks=3, every=2, code=code)
    server, address = await serve(proxy)
    sleep = RecordedSleep()
    try:
        async with DispatcherClient(address, max_attempts=2, sleep=sleep) as client:
            seen = [e.event_id async for e in client.await_result("t1", token)]
    finally:
        await server.stop(None)
    assert seen == ids
    assert proxy.resumed_after == ["", ids[1], ids[3], ids[5]]
    # Three separate breaks with max_attempts=2: progress between breaks resets the budget.
    assert len(sleep.delays) == 3


async def test_events_published_later_arrive_and_keepalives_are_hidden(
    store: MemoryResultStore,
) -> None:
    token = await store.register("t1")
    server, address = await serve(ResultServicer(store, keepalive_interval=0.02))
    try:
        async with DispatcherClient(address) as client:
            with_keepalives = client.await_result("t1", token, keepalives=True)
            assert (await anext(with_keepalives)).kind == KEEPALIVE
            await with_keepalives.aclose()
            stream = client.await_result("t1", token)
            await store.publish("t1", EventKind.FINAL, b"done", "", 1)
            events = [e async for e in stream]
    finally:
        await server.stop(None)
    assert [(e.kind, e.payload) for e in events] == [(FINAL, b"done")]


async def test_a_wrong_token_is_raised_not_retried(store: MemoryResultStore) -> None:
    await store.register("t1")
    proxy = BreakingProxy(ResultServicer(store), breaks=0, every=0, code=grpc.StatusCode.OK)
    server, address = await serve(proxy)
    try:
        async with DispatcherClient(address) as client:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in client.await_result("t1", "wrong"):
                    pass
    finally:
        await server.stop(None)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert len(proxy.resumed_after) == 1


async def test_a_dead_dispatcher_is_given_up_after_max_attempts() -> None:
    sleep = RecordedSleep()
    policy = RetryPolicy(max_attempts=3)
    async with DispatcherClient("127.0.0.1:1", retry=policy, sleep=sleep, timeout=1) as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in client.await_result("t1", "token"):
                pass
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(sleep.delays) == 2
