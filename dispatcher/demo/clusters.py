"""Simulated clusters: a regional agent's Connect stream and the workers behind it.

Each cluster reports a heartbeat every ``HEARTBEAT_S``: its in-flight count and cumulative
outcome counters per agent version (what the breakers read). A task routed to it occupies
one of its slots for a simulated service time (queueing when all are busy, as a real
cluster does), then settles through ``RoutingService.Settle``. ``failing`` makes one agent
version fail a share of its tasks; ``restart`` ends the stream and reconnects with a new
boot id, as a rebooted agent does.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from dispatcher.demo.quota_check import QuotaCheck
from dispatcher.demo.scenario import HEARTBEAT_S, ClusterPlan
from dispatcher.v1 import agent_pb2, agent_pb2_grpc, common_pb2, routing_pb2, routing_pb2_grpc

SERVICE_MEDIAN_S = 0.4
ACK_TIMEOUT_S = 5.0


@dataclass
class Outcomes:
    started: Counter[str] = field(default_factory=Counter)
    succeeded: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)


class SimCluster:
    def __init__(
        self, plan: ClusterPlan, channel: grpc.aio.Channel, rng: random.Random, check: QuotaCheck
    ) -> None:
        self.plan = plan
        self.check = check
        self.channel = channel
        self.rng = rng
        self.boot_id = uuid.uuid4().hex[:12]
        self.slots = asyncio.Semaphore(plan.slots)
        self.in_flight = 0
        self.peak_in_flight = 0
        self.outcomes = Outcomes()
        self.failing: dict[str, float] = {}  # version -> share of its tasks that fail
        self.errors: list[str] = []
        self._stream: Any = None
        self._seq = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    # -- the stream -------------------------------------------------------------------------

    async def connect(self) -> None:
        stub: Any = agent_pb2_grpc.AgentServiceStub(self.channel)
        self._stream = stub.Connect()
        self._seq = 0
        await self.report(announce=True)

    async def restart(self) -> None:
        async with self._lock:
            await self._stream.done_writing()
            self.boot_id = uuid.uuid4().hex[:12]
            self.outcomes = Outcomes()  # a new process counts from zero
            await self.connect()

    async def report(self, announce: bool = False) -> None:
        """One heartbeat, answered by the dispatcher's ack."""
        self._seq += 1
        versions = [
            agent_pb2.VersionCounters(
                agent_version=v,
                started=self.outcomes.started[v],
                succeeded=self.outcomes.succeeded[v],
                failed=self.outcomes.failed[v],
            )
            for v in self.outcomes.started
        ]
        report = agent_pb2.AgentReport(
            seq=self._seq,
            cluster_id=self.plan.cluster_id,
            boot_id=self.boot_id,
            load=agent_pb2.LoadReport(
                in_flight=self.in_flight,
                application_utilization=self.in_flight / self.plan.slots,
            ),
            versions=versions,
        )
        if announce or self._seq == 1:
            report.announce.CopyFrom(
                agent_pb2.ClusterAnnouncement(
                    region=self.plan.region,
                    endpoint=f"{self.plan.cluster_id}.demo:443",
                    slots=self.plan.slots,
                    pool_ids=[self.plan.pool_id],
                )
            )
        await self._stream.write(report)
        async with asyncio.timeout(ACK_TIMEOUT_S):
            await self._acked()

    async def _acked(self) -> None:
        while True:
            directive = await self._stream.read()
            if directive is grpc.aio.EOF:
                raise ConnectionError(f"{self.plan.cluster_id}: the dispatcher ended the stream")
            if directive.WhichOneof("kind") == "ack" and directive.ack.seq == self._seq:
                return

    async def heartbeat_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), HEARTBEAT_S)
            async with self._lock:
                try:
                    await self.report()
                except (grpc.aio.AioRpcError, ConnectionError, TimeoutError) as exc:
                    self.errors.append(f"heartbeat: {exc}")

    # -- the workers ------------------------------------------------------------------------

    def run(self, decision: routing_pb2.RouteDecision) -> None:
        task = asyncio.create_task(self._work(decision))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _work(self, decision: routing_pb2.RouteDecision) -> None:
        version = decision.agent_version
        async with self.slots:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            self.outcomes.started[version] += 1
            seconds = self.rng.lognormvariate(0.0, 0.5) * SERVICE_MEDIAN_S
            await asyncio.sleep(seconds)  # the simulated work itself
            failed = self.rng.random() < self.failing.get(version, 0.0)
            (self.outcomes.failed if failed else self.outcomes.succeeded)[version] += 1
            self.in_flight -= 1
        await self._settle(decision, failed, seconds)

    async def _settle(self, decision: routing_pb2.RouteDecision, failed: bool, s: float) -> None:
        spent = Duration()
        spent.FromNanoseconds(round(s * 1e9))
        request = routing_pb2.SettleRequest(
            reservation_id=decision.reservation_id,
            usage=common_pb2.Usage(requests=1, input_tokens=700, output_tokens=250),
            outcome=common_pb2.TASK_OUTCOME_FAILURE if failed else common_pb2.TASK_OUTCOME_SUCCESS,
            duration=spent,
        )
        stub: Any = routing_pb2_grpc.RoutingServiceStub(self.channel)
        try:
            reply = await stub.Settle(request, timeout=5.0)
        except grpc.aio.AioRpcError as exc:
            self.errors.append(f"settle {decision.reservation_id}: {exc.code().name}")
            return
        for charge in reply.refunded:
            self.check.refund(charge.pool_id, time.time(), charge.cost.tokens)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._stream is not None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._stream.done_writing()
