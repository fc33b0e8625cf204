"""The SDK retries what is safe to retry, when the server says, and never more than allowed."""

from __future__ import annotations

import random

import grpc
import pytest

from dispatcher.client import DispatcherClient, RetryPolicy, retry_info_delay
from dispatcher.v1 import common_pb2
from tests.client.conftest import Fail, RecordedSleep, ScriptedRouting, status_of

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


async def test_resource_exhausted_waits_the_retry_info_delay_then_succeeds(
    client: DispatcherClient, servicer: ScriptedRouting, sleep: RecordedSleep
) -> None:
    servicer.script["Route"] = [Fail(EXHAUSTED, 0.25), Fail(EXHAUSTED, 1.5)]
    decision = await client.route("chat-default", "auditor")
    assert decision.reservation_id == "res-1"
    assert len(sleep.delays) == 2
    assert 0.25 <= sleep.delays[0] <= 0.25 * 1.1  # the server's delay, plus <= 10 % jitter
    assert 1.5 <= sleep.delays[1] <= 1.5 * 1.1


async def test_every_route_attempt_carries_the_same_request_id(
    client: DispatcherClient, servicer: ScriptedRouting
) -> None:
    """So a retried Route is deduplicated by the server and never reserves twice."""
    servicer.script["Route"] = [Fail(UNAVAILABLE), Fail(EXHAUSTED, 0.01)]
    await client.route("chat-default", "auditor", caller_region="eastus2")
    ids = {request.request_id for request in servicer.calls["Route"]}
    assert len(servicer.calls["Route"]) == 3
    assert len(ids) == 1
    assert ids != {""}


async def test_unavailable_backs_off_exponentially_with_full_jitter(
    client: DispatcherClient, servicer: ScriptedRouting, sleep: RecordedSleep
) -> None:
    servicer.script["Settle"] = [Fail(UNAVAILABLE)] * 3
    await client.settle("res-1", common_pb2.TASK_OUTCOME_SUCCESS)
    ceilings = [0.1, 0.2, 0.4]
    assert len(sleep.delays) == 3
    assert all(0 <= d <= c for d, c in zip(sleep.delays, ceilings, strict=True))


async def test_resource_exhausted_without_retry_info_is_final(
    client: DispatcherClient, servicer: ScriptedRouting, sleep: RecordedSleep
) -> None:
    servicer.script["Route"] = [Fail(EXHAUSTED)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.route("chat-default", "auditor")
    assert caught.value.code() == EXHAUSTED
    assert sleep.delays == []


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED],
)
async def test_errors_that_retrying_cannot_fix_are_raised_at_once(
    client: DispatcherClient, servicer: ScriptedRouting, code: grpc.StatusCode
) -> None:
    servicer.script["Release"] = [Fail(code)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.release("res-1")
    assert caught.value.code() == code
    assert len(servicer.calls["Release"]) == 1


async def test_attempts_are_capped_and_the_last_error_is_raised(
    client: DispatcherClient, servicer: ScriptedRouting, sleep: RecordedSleep
) -> None:
    servicer.script["Extend"] = [Fail(UNAVAILABLE)] * 10
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.extend("res-1", dispatched=True)
    assert caught.value.code() == UNAVAILABLE
    assert len(servicer.calls["Extend"]) == 4  # max_attempts
    assert len(sleep.delays) == 3


def exhausted_with_retry_info(seconds: float) -> grpc.aio.AioRpcError:
    status = status_of(Fail(EXHAUSTED, seconds))
    return grpc.aio.AioRpcError(
        EXHAUSTED,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*status.trailing_metadata),
        details=status.details,
    )


def test_a_huge_retry_info_delay_is_capped() -> None:
    policy = RetryPolicy(max_retry_info=30.0, retry_info_jitter=0.0)
    assert retry_info_delay(exhausted_with_retry_info(3600)) == 3600
    assert policy.delay_for(exhausted_with_retry_info(3600), 0) == 30.0


def test_backoff_never_exceeds_max_backoff() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=5.0, rng=random.Random(1))
    assert all(0 <= policy.backoff(attempt) <= 5.0 for attempt in range(50))
