"""``DispatcherClient``: one channel to the dispatcher, every call retried where it is safe."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from dispatcher.client.results import follow_result
from dispatcher.client.retry import RetryPolicy, Sleep, call_with_retry
from dispatcher.client.task import TaskRun, run_task
from dispatcher.v1 import common_pb2, result_pb2, result_pb2_grpc, routing_pb2, routing_pb2_grpc

T = TypeVar("T")

# Result streams stay open for up to an hour: ping through idle NATs, within the server's
# grpc.http2.min_ping_interval_without_data_ms (10 s).
CHANNEL_OPTIONS: Sequence[tuple[str, Any]] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
)


def duration(seconds: float) -> Duration:
    message = Duration()
    message.FromNanoseconds(round(seconds * 1e9))
    return message


def timestamp(moment: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(moment)
    return message


class DispatcherClient:
    """The caller SDK. Use as ``async with DispatcherClient("host:50051") as client:``.

    ``credentials``: ``grpc.ssl_channel_credentials(...)`` (optionally composed with call
    credentials); None means plaintext. ``timeout`` bounds each unary attempt, not the retries
    together. ``sleep`` is a test hook. Errors reach the caller as ``grpc.aio.AioRpcError``.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        max_attempts: int = 5,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
        metadata: Sequence[tuple[str, str]] = (),
        options: Sequence[tuple[str, Any]] = CHANNEL_OPTIONS,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.target = target
        self.retry = retry or RetryPolicy(max_attempts=max_attempts)
        self.timeout = timeout
        self.metadata = tuple(metadata)
        self._credentials = credentials
        self._options = tuple(options)
        self._sleep = sleep
        self._channel: grpc.aio.Channel | None = None

    @property
    def channel(self) -> grpc.aio.Channel:
        # Created on first use: a grpc.aio channel belongs to the loop it was made in.
        if self._channel is None:
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
            else:
                self._channel = grpc.aio.secure_channel(
                    self.target, self._credentials, options=self._options
                )
        return self._channel

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def __aenter__(self) -> DispatcherClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _unary(self, call: Callable[..., Awaitable[T]], request: Any) -> T:
        return await call_with_retry(
            lambda: call(request, timeout=self.timeout, metadata=self.metadata),
            self.retry,
            self._sleep,
        )

    def _routing(self) -> routing_pb2_grpc.RoutingServiceAsyncStub:
        return routing_pb2_grpc.RoutingServiceStub(self.channel)

    def _results(self) -> result_pb2_grpc.ResultServiceAsyncStub:
        return result_pb2_grpc.ResultServiceStub(self.channel)

    async def route(
        self,
        route: str,
        agent: str,
        *,
        request_id: str | None = None,
        task_class: common_pb2.TaskClass.ValueType = common_pb2.TASK_CLASS_UNSPECIFIED,
        estimate: common_pb2.TokenEstimate | None = None,
        expected_duration: float | None = None,
        lease: float | None = None,
        deadline: datetime | None = None,
        **fields: Any,
    ) -> routing_pb2.RouteDecision:
        """Route one task. ``request_id`` defaults to a fresh UUID and is reused by every retry,
        so a retry never reserves twice. Durations are seconds; ``fields`` are the other
        ``RouteRequest`` fields as is (``agent_version``, ``caller_region``, ``session_key``,
        ``priority``)."""
        request = routing_pb2.RouteRequest(
            request_id=request_id or uuid.uuid4().hex,
            route=route,
            agent=agent,
            task_class=task_class,
            estimate=estimate,
            expected_duration=None if expected_duration is None else duration(expected_duration),
            lease=None if lease is None else duration(lease),
            deadline=None if deadline is None else timestamp(deadline),
            **fields,
        )
        return await self._unary(self._routing().Route, request)

    async def settle(
        self,
        reservation_id: str,
        outcome: common_pb2.TaskOutcome.ValueType,
        *,
        usage: common_pb2.Usage | None = None,
        duration_s: float | None = None,
    ) -> routing_pb2.SettleResponse:
        request = routing_pb2.SettleRequest(
            reservation_id=reservation_id,
            outcome=outcome,
            usage=usage,
            duration=None if duration_s is None else duration(duration_s),
        )
        return await self._unary(self._routing().Settle, request)

    async def release(self, reservation_id: str, reason: str = "") -> routing_pb2.ReleaseResponse:
        request = routing_pb2.ReleaseRequest(reservation_id=reservation_id, reason=reason)
        return await self._unary(self._routing().Release, request)

    async def extend(
        self, reservation_id: str, *, lease: float | None = None, dispatched: bool = False
    ) -> routing_pb2.ExtendResponse:
        """Prolong the lease and/or mark the task started. Usage deltas are not sent from
        here: they are not idempotent, and clusters report usage themselves."""
        request = routing_pb2.ExtendRequest(
            reservation_id=reservation_id,
            lease=None if lease is None else duration(lease),
            dispatched=dispatched,
        )
        return await self._unary(self._routing().Extend, request)

    async def publish(
        self,
        task_id: str,
        kind: result_pb2.ResultEventKind.ValueType,
        payload: bytes,
        *,
        sequence: int,
        content_type: str = "",
    ) -> result_pb2.PublishResponse:
        """Publish one event (workers talking to the dispatcher directly). ``sequence`` counts
        from 1 per task and makes a retry a no-op (``duplicate``)."""
        request = result_pb2.PublishRequest(
            task_id=task_id,
            kind=kind,
            payload=payload,
            content_type=content_type,
            sequence=sequence,
        )
        return await self._unary(self._results().Publish, request)

    def await_result(
        self, task_id: str, token: str, *, after_event_id: str = "", keepalives: bool = False
    ) -> AsyncGenerator[result_pb2.ResultEvent, None]:
        """The task's events until FINAL or ERROR, resuming by itself after a broken stream.

        Leaving early: ``aclose()`` it (or use ``contextlib.aclosing``) to end the call now
        rather than when the generator is collected. Keep ``event.event_id`` of the last event
        handled to resume later from another process:
        ``await_result(task_id, token, after_event_id=last)``.
        """
        request = result_pb2.AwaitResultRequest(
            task_id=task_id, result_token=token, after_event_id=after_event_id
        )
        return follow_result(self._results, request, self.retry, self._sleep, keepalives=keepalives)

    def task(
        self, route: str, agent: str, **route_fields: Any
    ) -> contextlib.AbstractAsyncContextManager[TaskRun]:
        """Route on enter; on exit settle (SUCCESS, FAILURE on an exception, CANCELLED on
        cancellation) if the task was dispatched, else release. See ``TaskRun``."""
        return run_task(self, route, agent, route_fields)
