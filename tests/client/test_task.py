"""``client.task(...)``: the reservation always ends, and ends the right way."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from dispatcher.client import DispatcherClient
from dispatcher.v1 import common_pb2, routing_pb2
from tests.client.conftest import Fail, ScriptedRouting


async def test_a_dispatched_task_is_settled_with_success_and_its_usage(
    client: DispatcherClient, servicer: ScriptedRouting
) -> None:
    async with client.task("chat-default", "auditor", session_key="s1") as run:
        assert run.decision.task_id == "task-1"
        await run.mark_dispatched()
        run.usage.output_tokens = 300
    assert servicer.calls["Route"][0].session_key == "s1"
    assert servicer.calls["Extend"][0].dispatched is True
    [settle] = servicer.calls["Settle"]
    assert (settle.reservation_id, settle.outcome) == ("res-1", common_pb2.TASK_OUTCOME_SUCCESS)
    assert settle.usage.output_tokens == 300
    assert settle.HasField("duration")
    assert servicer.calls["Release"] == []


async def test_an_exception_settles_failure_and_propagates(
    client: DispatcherClient, servicer: ScriptedRouting
) -> None:
    async def failing_task() -> None:
        async with client.task("chat-default", "auditor") as run:
            await run.mark_dispatched()
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await failing_task()
    assert servicer.calls["Settle"][0].outcome == common_pb2.TASK_OUTCOME_FAILURE


async def test_cancellation_settles_cancelled(
    client: DispatcherClient, servicer: ScriptedRouting
) -> None:
    dispatched = asyncio.Event()

    async def caller() -> None:
        async with client.task("chat-default", "auditor") as run:
            await run.mark_dispatched()
            dispatched.set()
            await asyncio.Event().wait()  # a long task, cancelled from outside

    task = asyncio.create_task(caller())
    await dispatched.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert servicer.calls["Settle"][0].outcome == common_pb2.TASK_OUTCOME_CANCELLED


async def test_a_task_never_dispatched_is_released(
    client: DispatcherClient, servicer: ScriptedRouting
) -> None:
    with pytest.raises(RuntimeError):
        async with client.task("chat-default", "auditor"):
            raise RuntimeError("could not reach the cluster")
    [release] = servicer.calls["Release"]
    assert release.reservation_id == "res-1"
    assert "RuntimeError" in release.reason
    assert servicer.calls["Settle"] == []


async def test_a_maintenance_answer_reserves_nothing_so_nothing_is_closed(
    client: DispatcherClient, servicer: ScriptedRouting
) -> None:
    servicer.script["Route"] = [
        routing_pb2.RouteDecision(
            outcome=routing_pb2.ROUTE_OUTCOME_MAINTENANCE, maintenance_message="back soon"
        )
    ]
    async with client.task("chat-default", "auditor") as run:
        assert run.maintenance
    assert servicer.calls["Release"] == []
    assert servicer.calls["Settle"] == []


async def test_a_failing_cleanup_never_hides_the_callers_exception(
    client: DispatcherClient, servicer: ScriptedRouting
) -> None:
    servicer.script["Settle"] = [Fail(grpc.StatusCode.INTERNAL)]

    async def failing_task() -> None:
        async with client.task("chat-default", "auditor") as run:
            await run.mark_dispatched()
            raise KeyError("the caller's own error")

    with pytest.raises(KeyError):
        await failing_task()


async def test_an_explicit_outcome_wins(
    client: DispatcherClient, servicer: ScriptedRouting
) -> None:
    async with client.task("chat-default", "auditor") as run:
        await run.mark_dispatched()
        run.outcome = common_pb2.TASK_OUTCOME_TIMEOUT
    assert servicer.calls["Settle"][0].outcome == common_pb2.TASK_OUTCOME_TIMEOUT
