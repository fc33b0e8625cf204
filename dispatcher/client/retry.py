"""When the SDK calls again: jittered exponential backoff on UNAVAILABLE, and exactly the
server's ``google.rpc.RetryInfo`` delay on RESOURCE_EXHAUSTED (the dispatcher attaches it when
no cluster has room; without it, RESOURCE_EXHAUSTED is final, e.g. a result over its cap).

Only calls that are safe to repeat go through here: every dispatcher RPC the SDK makes is
idempotent by contract (Route on ``request_id``, Settle/Release/Extend on reservation id,
Publish on ``sequence``, AwaitResult resumes after the last event id).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff: attempt n (from 0) waits uniform(0, min(max_backoff, initial * multiplier^n))
    ("full jitter", so a fleet of callers does not retry in lockstep). A server RetryInfo
    delay is honoured, capped at ``max_retry_info``, plus up to ``retry_info_jitter`` of it."""

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    max_retry_info: float = 30.0
    retry_info_jitter: float = 0.1
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def backoff(self, attempt: int) -> float:
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier**attempt)
        return self.rng.uniform(0.0, ceiling)

    def delay_for(self, error: grpc.aio.AioRpcError, attempt: int) -> float | None:
        """Seconds to wait before calling again after ``error``; None: do not retry."""
        code = error.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            return self.backoff(attempt)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            delay = retry_info_delay(error)
            if delay is None:
                return None
            delay = min(delay, self.max_retry_info)
            return delay * (1.0 + self.rng.uniform(0.0, self.retry_info_jitter))
        return None


def retry_info_delay(error: grpc.aio.AioRpcError) -> float | None:
    """The ``RetryInfo.retry_delay`` in the error's rich status, in seconds, if it has one."""
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]  # AioRpcError is a Call
    except ValueError:  # details that contradict the status line: ignore them
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            delay: float = info.retry_delay.ToTimedelta().total_seconds()
            return max(0.0, delay)
    return None


async def call_with_retry(
    call: Callable[[], Awaitable[T]], policy: RetryPolicy, sleep: Sleep = asyncio.sleep
) -> T:
    """``await call()``, again after each retryable error, at most ``policy.max_attempts`` times."""
    attempt = 0
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            delay = policy.delay_for(error, attempt)
            attempt += 1
            if delay is None or attempt >= policy.max_attempts:
                raise
            await sleep(delay)
