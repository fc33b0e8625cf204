"""The agent loop: one Connect stream to the dispatcher, kept up for the process's life.

Per session: connect, announce, then report every interval (the first after a random phase,
so a fleet restarted together does not report in lockstep, yet never sooner than the
dispatcher's flood rule allows). Each report carries the usage rows of the outbox not
already riding on an unacked report; when a report is acked, the rows listed durable are
deleted and the others become sendable again. After a reconnect
every row still in the outbox is resent (redelivery is idempotent on report_id).
A broken stream is retried with exponential backoff and full jitter; a stream that got at
least one ack resets the backoff. On stop (SIGTERM): report admin state DRAIN, wait briefly
for its ack, close the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Sequence
from datetime import timedelta

import grpc

from dispatcher.logs import get_logger
from dispatcher.v1 import agent_pb2, agent_pb2_grpc, common_pb2
from regional_agent.channel import open_channel
from regional_agent.collectors import HostCollector
from regional_agent.config import AgentConfig
from regional_agent.outbox import Outbox
from regional_agent.reports import (
    announcement,
    load_report,
    observation_to_proto,
    version_counters,
)
from regional_agent.state import LocalState

log = get_logger(__name__)

MAX_USAGE_PER_REPORT = 500
#: The dispatcher refuses a report sooner than half an interval after the previous one (a
#: flood; the announce counts), so no two reports are ever closer than this share of it.
MIN_GAP_SHARE = 0.6
GOODBYE_TIMEOUT_S = 2.0
Call = grpc.aio.StreamStreamCall[agent_pb2.AgentReport, agent_pb2.Directive]
_STREAM_ENDED = (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError)


class AgentLoop:
    def __init__(
        self,
        config: AgentConfig,
        state: LocalState,
        outbox: Outbox,
        collector: HostCollector,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.state = state
        self.outbox = outbox
        self.collector = collector
        self.boot_id = uuid.uuid4().hex
        self.interval = config.interval
        self.drained_by_dispatcher = False
        self.sessions = 0
        self._rng = rng or random.Random()
        self._seq = 0
        self._sent: dict[int, list[str]] = {}  # seq -> usage report ids it carried
        self._riding: set[str] = set()  # ids on a report not yet acked
        self._acked = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Keep a session up until ``stop`` is set; then say DRAIN and return."""
        failures = 0
        while not stop.is_set():
            self.sessions += 1
            acked = await self._session(stop)
            failures = 0 if acked else failures + 1
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.backoff(failures))

    def backoff(self, failures: int) -> float:
        """Full jitter over an exponential ceiling (AWS architecture blog's recommendation)."""
        ceiling = min(self.config.reconnect_max, self.config.reconnect_min * 2 ** min(failures, 30))
        return self._rng.uniform(self.config.reconnect_min / 2, ceiling)

    async def _session(self, stop: asyncio.Event) -> bool:
        self._seq, self._sent, self._riding = 0, {}, set()
        self._acked.clear()
        got_ack = False
        async with open_channel(self.config.dispatcher, self.config.tls) as channel:
            call = agent_pb2_grpc.AgentServiceStub(channel).Connect(metadata=self._metadata())
            reader = asyncio.create_task(self._read(call))
            stopper = asyncio.create_task(stop.wait())
            try:
                await self._send(call, announce=True)
                await self._report_until_done(call, reader, stopper)
                if stop.is_set() and not reader.done():
                    await self._goodbye(call, reader)
            except grpc.aio.AioRpcError as exc:
                log.warning("stream_failed", code=exc.code().name, detail=exc.details())
            except _STREAM_ENDED:
                pass  # the reader saw (and logged) how the stream ended
            finally:
                got_ack = self._acked.is_set()
                stopper.cancel()
                reader.cancel()
                await asyncio.gather(reader, stopper, return_exceptions=True)
        return got_ack

    async def _report_until_done(
        self, call: Call, reader: asyncio.Task[None], stopper: asyncio.Task[bool]
    ) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self._rng.uniform(MIN_GAP_SHARE, 1.0) * self.interval
        while True:
            delay = max(0.0, next_at - loop.time())
            done, _ = await asyncio.wait(
                {reader, stopper}, timeout=delay, return_when=asyncio.FIRST_COMPLETED
            )
            if done:
                return
            await self._send(call)
            # Keep the schedule, but never fire twice at once after a stall.
            next_at = max(next_at + self.interval, loop.time() + self.interval * MIN_GAP_SHARE)

    async def _goodbye(self, call: Call, reader: asyncio.Task[None]) -> None:
        seq = await self._send(call, admin_state=common_pb2.ADMIN_STATE_DRAIN)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                while seq in self._sent and not reader.done():
                    self._acked.clear()
                    acked = asyncio.ensure_future(self._acked.wait())
                    try:
                        await asyncio.wait({reader, acked}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        acked.cancel()
        await call.done_writing()
        log.info("drained", cluster_id=self.config.cluster_id)

    async def _send(
        self,
        call: Call,
        *,
        announce: bool = False,
        admin_state: common_pb2.AdminState.ValueType = common_pb2.ADMIN_STATE_UNSPECIFIED,
    ) -> int:
        self._seq += 1
        usage = self.outbox.pending(MAX_USAGE_PER_REPORT, skip=self._riding)
        snapshot = self.state.snapshot()
        report = agent_pb2.AgentReport(
            seq=self._seq,
            cluster_id=self.config.cluster_id,
            boot_id=self.boot_id,
            load=load_report(snapshot, self.collector.sample()),
            versions=version_counters(snapshot),
            admin_state=common_pb2.ADMIN_STATE_READY if announce else admin_state,
            usage=usage,
            observations=[observation_to_proto(*o) for o in self.state.take_observations()],
        )
        report.sent_at.GetCurrentTime()
        if announce:
            report.announce.CopyFrom(announcement(self.config, self.collector.capacity()))
            report.announce.report_interval.FromTimedelta(timedelta(seconds=self.interval))
        ids = [u.report_id for u in usage]
        self._sent[self._seq] = ids
        self._riding.update(ids)
        await call.write(report)
        return self._seq

    async def _read(self, call: Call) -> None:
        try:
            async for directive in call:
                self._on_directive(directive)
            log.info("stream_ended", code="OK")
        except grpc.aio.AioRpcError as exc:
            log.warning("stream_failed", code=exc.code().name, detail=exc.details())

    def _on_directive(self, directive: agent_pb2.Directive) -> None:
        kind = directive.WhichOneof("kind")
        if kind == "ack":
            self._on_ack(directive.ack)
        elif kind == "drain":
            self.drained_by_dispatcher = directive.drain.drain
            log.info("dispatcher_drain", drain=directive.drain.drain, reason=directive.drain.reason)
        elif kind == "config" and directive.config.HasField("report_interval"):
            seconds = directive.config.report_interval.ToTimedelta().total_seconds()
            if seconds > 0:
                self.interval = seconds

    def _on_ack(self, ack: agent_pb2.Ack) -> None:
        carried = self._sent.pop(ack.seq, [])
        if ack.durable_report_ids:
            self.outbox.mark_durable(ack.durable_report_ids)
        # Rows the ack did not call durable may go again on the next report.
        self._riding.difference_update(carried)
        if ack.rejected_reason:
            log.warning("report_rejected", seq=ack.seq, reason=ack.rejected_reason)
            self._set_aside_bad_usage(ack.rejected_reason, carried)
        self._acked.set()

    def _set_aside_bad_usage(self, reason: str, carried: Sequence[str]) -> None:
        # "usage[<id>].field: why" - resending that row would be rejected forever.
        if reason.startswith("usage["):
            report_id = reason[len("usage[") :].partition("]")[0]
            if report_id in carried:
                self.outbox.set_aside(report_id, reason)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        token = self.config.token
        return (("authorization", f"Bearer {token.get_secret_value()}"),) if token else ()
