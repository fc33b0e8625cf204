"""``client.task(...)``: one routed task whose reservation always ends, whatever the caller does.

    async with client.task("chat-default", "auditor", estimate=estimate) as run:
        if run.maintenance:
            return run.decision.maintenance_message
        await send_to_cluster(run.decision.cluster.endpoint, run.decision.task_id)
        await run.mark_dispatched()
        async for event in run.results():
            ...
        run.usage.output_tokens = 300          # optional: what the task consumed

On exit, a dispatched task is settled: SUCCESS, FAILURE if the block raised, CANCELLED if it
was cancelled (or ``run.outcome`` if set). A task never dispatched is released, so its quota
returns to the pool at once instead of when its lease expires. Cleanup after cancellation is
shielded: a second cancellation does not cut a Settle in half. A cleanup failure after the
block raised is logged, not raised, so it never hides the block's own exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from dispatcher.logs import get_logger
from dispatcher.v1 import common_pb2, result_pb2, routing_pb2

if TYPE_CHECKING:
    from dispatcher.client.client import DispatcherClient

log = get_logger(__name__)

_INTERRUPTIONS = (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit)


class TaskRun:
    """The routed task inside ``async with client.task(...)``."""

    def __init__(self, client: DispatcherClient, decision: routing_pb2.RouteDecision) -> None:
        self.client = client
        self.decision = decision
        self.usage = common_pb2.Usage()
        self.outcome: common_pb2.TaskOutcome.ValueType | None = None
        self.dispatched = False
        self._dispatched_at = 0.0

    @property
    def maintenance(self) -> bool:
        """Nothing was reserved; show ``decision.maintenance_message`` instead."""
        return self.decision.outcome == routing_pb2.ROUTE_OUTCOME_MAINTENANCE

    async def mark_dispatched(self, lease: float | None = None) -> None:
        """Tell the dispatcher the cluster has the task (RESERVED -> IN_FLIGHT)."""
        await self.client.extend(self.decision.reservation_id, lease=lease, dispatched=True)
        self.dispatched = True
        self._dispatched_at = time.monotonic()

    def results(self, after_event_id: str = "") -> AsyncIterator[result_pb2.ResultEvent]:
        return self.client.await_result(
            self.decision.task_id, self.decision.result_token, after_event_id=after_event_id
        )

    async def close(self, outcome: common_pb2.TaskOutcome.ValueType, reason: str) -> None:
        reservation_id = self.decision.reservation_id
        if not reservation_id:
            return
        if not self.dispatched:
            await self.client.release(reservation_id, reason)
            return
        await self.client.settle(
            reservation_id,
            self.outcome or outcome,
            usage=self.usage,
            duration_s=time.monotonic() - self._dispatched_at,
        )


@contextlib.asynccontextmanager
async def run_task(
    client: DispatcherClient, route: str, agent: str, route_fields: Mapping[str, Any]
) -> AsyncIterator[TaskRun]:
    run = TaskRun(client, await client.route(route, agent, **route_fields))
    try:
        yield run
    except BaseException as exc:
        interrupted = isinstance(exc, _INTERRUPTIONS)
        outcome = (
            common_pb2.TASK_OUTCOME_CANCELLED if interrupted else common_pb2.TASK_OUTCOME_FAILURE
        )
        reason = "caller cancelled" if interrupted else f"caller failed: {type(exc).__name__}"
        try:
            await asyncio.shield(run.close(outcome, reason))
        except Exception as cleanup_error:
            log.warning(
                "task_cleanup_failed",
                reservation_id=run.decision.reservation_id,
                error=str(cleanup_error),
            )
        raise
    await run.close(common_pb2.TASK_OUTCOME_SUCCESS, "never dispatched")
