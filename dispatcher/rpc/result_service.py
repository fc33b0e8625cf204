"""``ResultService``: Publish and AwaitResult over a ``ResultStore`` (DESIGN §5, §9).

AwaitResult streams the stored events after ``after_event_id``, then live ones until FINAL or
ERROR, with a KEEPALIVE whenever nothing was sent for ``keepalive_interval`` so no proxy idles
the stream out; the stream has no deadline of its own (hour-long tasks are fine).

Memory per stream is bounded: ``relay.follow`` holds at most one page of events, and each
``yield`` waits until gRPC has taken the message, which under HTTP/2 flow control means a
client that stops reading stops this handler instead of growing a buffer.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from dispatcher.errors import InvalidArgument, Unauthenticated
from dispatcher.relay.follow import DEFAULT_KEEPALIVE_INTERVAL, follow
from dispatcher.relay.model import EventKind, ResultEvent, ResultStore, ResultTooLarge
from dispatcher.rpc.handlers import Context, streaming, unary
from dispatcher.v1 import result_pb2, result_pb2_grpc

KIND_FROM_PROTO = {
    result_pb2.RESULT_EVENT_KIND_PROGRESS: EventKind.PROGRESS,
    result_pb2.RESULT_EVENT_KIND_FINAL: EventKind.FINAL,
    result_pb2.RESULT_EVENT_KIND_ERROR: EventKind.ERROR,
}
KIND_TO_PROTO = {kind: proto for proto, kind in KIND_FROM_PROTO.items()}
KEEPALIVE = result_pb2.ResultEvent(kind=result_pb2.RESULT_EVENT_KIND_KEEPALIVE)


def event_to_proto(event: ResultEvent) -> result_pb2.ResultEvent:
    published_at = Timestamp()
    published_at.FromMilliseconds(round(event.published_at * 1000))
    return result_pb2.ResultEvent(
        event_id=event.event_id,
        kind=KIND_TO_PROTO[event.kind],
        payload=event.payload,
        content_type=event.content_type,
        published_at=published_at,
    )


def _kind_of(request: result_pb2.PublishRequest) -> EventKind:
    kind = KIND_FROM_PROTO.get(request.kind)
    if kind is None:
        raise InvalidArgument("kind", "must be PROGRESS, FINAL or ERROR")
    return kind


class ResultServicer(result_pb2_grpc.ResultServiceServicer):
    """The relay's gRPC face. ``keepalive_interval`` is in seconds (tests compress it)."""

    def __init__(
        self,
        store: ResultStore,
        *,
        keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL,
    ) -> None:
        if keepalive_interval <= 0:
            raise ValueError("keepalive_interval must be > 0")
        self.store = store  # the replicas' is a RoutedResultStore (``relay.factory``)
        self.keepalive_interval = keepalive_interval

    @unary
    async def Publish(
        self, request: result_pb2.PublishRequest, context: Context
    ) -> result_pb2.PublishResponse:
        if request.sequence < 1:
            raise InvalidArgument("sequence", "must be >= 1")
        try:
            published = await self.store.publish(
                request.task_id,
                _kind_of(request),
                request.payload,
                request.content_type,
                request.sequence,
            )
        except ResultTooLarge as exc:
            # Not in rpc/status.py's table yet (see ResultTooLarge): RESOURCE_EXHAUSTED, and
            # deliberately no RetryInfo, since waiting does not make room.
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        return result_pb2.PublishResponse(
            event_id=published.event_id, duplicate=published.duplicate
        )

    @streaming
    async def AwaitResult(
        self, request: result_pb2.AwaitResultRequest, context: Context
    ) -> AsyncIterator[result_pb2.ResultEvent]:
        if not request.result_token:
            raise Unauthenticated("result_token is required")
        events = follow(
            self.store,
            request.task_id,
            request.result_token,
            request.after_event_id,
            keepalive_interval=self.keepalive_interval,
        )
        # aclosing: a cancelled call (client gone) leaves the store's wait at once.
        async with contextlib.aclosing(events):
            async for event in events:
                yield KEEPALIVE if event is None else event_to_proto(event)
