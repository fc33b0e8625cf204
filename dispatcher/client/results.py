"""Following a task's result over gRPC, resuming after the last event id when the stream breaks.

A stream can break at any point of an hour-long task: a dispatcher replica restarts, a proxy
resets the HTTP/2 stream, a NAT forgets the connection. Each time, the SDK calls
``AwaitResult`` again with ``after_event_id`` = the last event it yielded, so the caller sees
every event exactly once. The attempt budget resets whenever a message arrives, so a long
stream survives any number of separate breaks but gives up on a dead dispatcher.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable

import grpc

from dispatcher.client.retry import RetryPolicy, Sleep
from dispatcher.v1 import result_pb2, result_pb2_grpc

TERMINAL = frozenset({result_pb2.RESULT_EVENT_KIND_FINAL, result_pb2.RESULT_EVENT_KIND_ERROR})
KEEPALIVE = result_pb2.RESULT_EVENT_KIND_KEEPALIVE


class StreamEnded(Exception):
    """The server ended the stream cleanly before FINAL/ERROR (treated like a reset)."""


def resume_delay(error: BaseException, policy: RetryPolicy, attempt: int) -> float | None:
    """Seconds to wait before resuming after ``error``; None: give up and raise it."""
    if isinstance(error, StreamEnded):
        return policy.backoff(attempt)
    if not isinstance(error, grpc.aio.AioRpcError):
        return None
    reset = error.code() == grpc.StatusCode.INTERNAL and "RST_STREAM" in (error.details() or "")
    # CANCELLED arriving as an error was not our doing (our own cancel ends the generator):
    # a replica stopping, a proxy or the transport ended the stream, so resume it.
    if reset or error.code() == grpc.StatusCode.CANCELLED:
        return policy.backoff(attempt)
    return policy.delay_for(error, attempt)


async def follow_result(
    stub: Callable[[], result_pb2_grpc.ResultServiceAsyncStub],
    request: result_pb2.AwaitResultRequest,
    policy: RetryPolicy,
    sleep: Sleep,
    *,
    keepalives: bool = False,
) -> AsyncGenerator[result_pb2.ResultEvent, None]:
    """Yield the task's events (and keepalives if asked) until FINAL or ERROR, resuming."""
    cursor = request.after_event_id
    attempt = 0
    while True:
        call = stub().AwaitResult(
            result_pb2.AwaitResultRequest(
                task_id=request.task_id, result_token=request.result_token, after_event_id=cursor
            )
        )
        try:
            async for event in call:
                attempt = 0
                if event.kind == KEEPALIVE:
                    if keepalives:
                        yield event
                    continue
                cursor = event.event_id
                yield event
                if event.kind in TERMINAL:
                    return
            raise StreamEnded(f"result stream of {request.task_id} ended before its result")
        except (grpc.aio.AioRpcError, StreamEnded) as error:
            delay = resume_delay(error, policy, attempt)
            attempt += 1
            if delay is None or attempt >= policy.max_attempts:
                raise
        finally:
            call.cancel()  # no-op once done; stops the RPC when the caller breaks out early
        await sleep(delay)
