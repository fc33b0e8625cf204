"""``AgentService.Connect``: the heartbeat stream of each cluster's regional agent.

Per stream: the bearer token (if auth is on) names the one cluster the stream may speak for;
the first report must announce; every report gets an Ack with its seq. A malformed report is
answered with ``rejected_reason`` and counted in ``rejections`` (by field); the stream stays
open. Usage reports go to ``on_usage``, whose durable ids the Ack carries; provider
observations go to ``on_observations``. Drain / config directives come from the
``DirectiveHub`` (fast path, this replica) and from the registry's drain flag seen on each
heartbeat (any replica). ``close_streams()`` ends every stream cleanly before a shutdown.

Per message this is one proto → dataclass translation and one registry call, which the Redis
registry batches across streams; nothing here logs per message.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from dispatcher.errors import InvalidArgument, PermissionDenied, Unauthenticated
from dispatcher.fleet.hub import ConfigChange, DirectiveHub, Drain
from dispatcher.fleet.hub import Directive as HubDirective
from dispatcher.fleet.model import (
    ClusterInfo,
    ClusterLoad,
    ClusterReport,
    Lane,
    LaneCapacity,
    LaneLoad,
    ReportOutcome,
    UsageReport,
    VersionCounters,
)
from dispatcher.fleet.registry import ClusterRegistry
from dispatcher.ledger.model import Observation
from dispatcher.logs import get_logger
from dispatcher.rpc.auth import bearer_token, token_digest
from dispatcher.rpc.convert import ADMIN_FROM_PB, LANE_FROM_PB, OUTCOME_NAMES
from dispatcher.rpc.handlers import Context, streaming
from dispatcher.rpc.status import duration_from_seconds
from dispatcher.rpc.tls import peer_common_name
from dispatcher.v1 import agent_pb2, agent_pb2_grpc, common_pb2

log = get_logger(__name__)

UsageHandler = Callable[[str, Sequence[UsageReport]], Awaitable[Sequence[str]]]
ObservationHandler = Callable[[str, Sequence[tuple[str, Observation]]], Awaitable[None]]


async def durable_at_once(cluster_id: str, reports: Sequence[UsageReport]) -> list[str]:
    """Default ``on_usage`` until the ledger settles here: every report counts as durable."""
    return [report.report_id for report in reports]


@dataclass
class _Stream:
    """What one Connect call knows about its agent."""

    owner: str | None  # cluster the credential owns; None when auth is off
    cluster_id: str | None = None
    drain_sent: bool = False


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    """Serves ``Connect``. ``tokens``: cluster id -> bearer token. ``client_certificates``:
    mutual TLS is on, and a client certificate's common name is the cluster it may report
    for. Neither: auth is off (the embedded default)."""

    def __init__(
        self,
        registry: ClusterRegistry,
        *,
        tokens: Mapping[str, str] | None = None,
        client_certificates: bool = False,
        report_interval: float | None = None,
        hub: DirectiveHub | None = None,
        on_usage: UsageHandler = durable_at_once,
        on_observations: ObservationHandler | None = None,
    ) -> None:
        self.registry = registry
        self.hub = hub or DirectiveHub()
        self.rejections: Counter[str] = Counter()
        self._owners = (
            None if tokens is None else {token_digest(t): cid for cid, t in tokens.items()}
        )
        self._client_certificates = client_certificates
        self._report_interval = report_interval
        self._on_usage = on_usage
        self._on_observations = on_observations

    def close_streams(self) -> None:
        """End every open stream with OK (call before ``server.stop``): agents reconnect."""
        self.hub.close()

    @streaming
    async def Connect(
        self, request_iterator: AsyncIterator[agent_pb2.AgentReport], context: Context
    ) -> AsyncIterator[agent_pb2.Directive]:
        stream = _Stream(owner=self._authenticate(context))
        out: asyncio.Queue[agent_pb2.Directive | BaseException | None] = asyncio.Queue()
        hub_stream = self.hub.open(lambda d: out.put_nowait(_directive(d, stream)))
        reader = asyncio.create_task(self._read(request_iterator, stream, hub_stream.bind, out))
        try:
            while (item := await out.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            hub_stream.close()
            reader.cancel()

    def _authenticate(self, context: Context) -> str | None:
        """The cluster this caller may report for; None when auth is off."""
        if self._client_certificates:
            # The TLS handshake already refused peers without a certificate from our CA.
            owner = peer_common_name(context)
            if owner:
                return owner
            raise Unauthenticated("the client certificate has no common name (the cluster id)")
        if self._owners is None:
            return None
        token = bearer_token(context)
        owner = self._owners.get(token_digest(token)) if token else None
        if owner is not None:
            return owner
        raise Unauthenticated("a known bearer token is required in 'authorization'")

    async def _read(
        self,
        reports: AsyncIterator[agent_pb2.AgentReport],
        stream: _Stream,
        bind: Callable[[str], None],
        out: asyncio.Queue[agent_pb2.Directive | BaseException | None],
    ) -> None:
        try:
            async for report in reports:
                ack, outcome = await self._handle(report, stream, bind)
                out.put_nowait(agent_pb2.Directive(ack=ack))
                if push := self._interval_push(report, ack):
                    out.put_nowait(_directive(push, stream))
                if outcome is not None and outcome.drained != stream.drain_sent:
                    drain = Drain(outcome.drained, outcome.drain_reason)
                    out.put_nowait(_directive(drain, stream))
            out.put_nowait(None)
        except Exception as exc:  # handed to Connect, which aborts with its status
            out.put_nowait(exc)

    def _interval_push(
        self, report: agent_pb2.AgentReport, ack: agent_pb2.Ack
    ) -> ConfigChange | None:
        """Our interval, for an accepted announce at another one: staleness and the flood
        rule are judged on ours, so an agent reporting at its own would look dead or be
        refused."""
        wanted = self._report_interval
        if not wanted or ack.rejected_reason or not report.HasField("announce"):
            return None
        if not report.announce.HasField("report_interval"):
            return None
        theirs = report.announce.report_interval.ToTimedelta().total_seconds()
        return None if abs(theirs - wanted) <= wanted * 0.01 else ConfigChange(wanted)

    async def _handle(
        self, report: agent_pb2.AgentReport, stream: _Stream, bind: Callable[[str], None]
    ) -> tuple[agent_pb2.Ack, ReportOutcome | None]:
        if stream.owner is not None and report.cluster_id != stream.owner:
            raise PermissionDenied(f"this credential may not report for {report.cluster_id!r}")
        try:
            first = stream.cluster_id is None
            domain = _report(report, first)
            if not first and report.cluster_id != stream.cluster_id:
                raise InvalidArgument("cluster_id", "must not change within a stream")
            usage = [_usage(u) for u in report.usage]
            outcome = await self.registry.record(domain)
        except InvalidArgument as exc:
            self.rejections[exc.field] += 1
            log.debug("report_rejected", cluster_id=report.cluster_id[:128], error=str(exc))
            return agent_pb2.Ack(seq=report.seq, rejected_reason=str(exc)), None
        if first:
            stream.cluster_id = report.cluster_id
            bind(report.cluster_id)
        if report.observations:
            await self._observe(report.cluster_id, report.observations)
        durable = await self._on_usage(report.cluster_id, usage) if usage else ()
        return agent_pb2.Ack(seq=report.seq, durable_report_ids=durable), outcome

    async def _observe(
        self, cluster_id: str, observations: Sequence[agent_pb2.ProviderObservation]
    ) -> None:
        known = self.registry.settings.known_pools
        accepted = []
        for item in observations:
            if known is not None and item.pool_id not in known:
                self.rejections["observations.pool_id"] += 1
                continue
            accepted.append((item.pool_id, _observation(item)))
        if accepted and self._on_observations is not None:
            await self._on_observations(cluster_id, accepted)


def _directive(directive: HubDirective | None, stream: _Stream) -> agent_pb2.Directive | None:
    if directive is None:
        return None
    if isinstance(directive, Drain):
        stream.drain_sent = directive.drain
        return agent_pb2.Directive(
            drain=agent_pb2.DrainDirective(drain=directive.drain, reason=directive.reason)
        )
    push = agent_pb2.ConfigPush(weight_percent=directive.weight_percent or 0)
    if directive.report_interval is not None:
        push.report_interval.CopyFrom(duration_from_seconds(directive.report_interval))
    return agent_pb2.Directive(config=push)


def _report(report: agent_pb2.AgentReport, first: bool) -> ClusterReport:
    if first and not report.HasField("announce"):
        raise InvalidArgument("announce", "required on the first report of a stream")
    has_load = report.HasField("load") or bool(report.versions)
    return ClusterReport(
        cluster_id=report.cluster_id,
        boot_id=report.boot_id,
        info=_info(report.cluster_id, report.announce) if report.HasField("announce") else None,
        load=_load(report.load, report.versions) if has_load else None,
        admin_state=ADMIN_FROM_PB.get(report.admin_state),
        weight_percent=report.weight_percent,
    )


def _lane(value: common_pb2.TaskClass.ValueType, field: str) -> Lane:
    lane = LANE_FROM_PB.get(value)
    if lane is None:
        raise InvalidArgument(field, "must be LIGHT, STANDARD or HEAVY")
    return lane


def _info(cluster_id: str, announce: agent_pb2.ClusterAnnouncement) -> ClusterInfo:
    return ClusterInfo(
        id=cluster_id,
        region=announce.region,
        endpoint=announce.endpoint,
        slots=announce.slots,
        cores=announce.cores,
        memory_bytes=announce.memory_bytes,
        lanes=tuple(
            LaneCapacity(_lane(lane.lane, f"announce.lanes[{i}].lane"), lane.slots)
            for i, lane in enumerate(announce.lanes)
        ),
        versions=tuple(announce.agent_versions),
        backends=tuple(announce.backends),
        pool_ids=tuple(announce.pool_ids),
        agent_build=announce.agent_build,
    )


def _load(load: agent_pb2.LoadReport, versions: Sequence[agent_pb2.VersionCounters]) -> ClusterLoad:
    return ClusterLoad(
        cpu=load.cpu_utilization,
        mem=load.mem_utilization,
        app_utilization=load.application_utilization,
        rps=load.rps_fractional,
        eps=load.eps,
        in_flight=load.in_flight,
        queue_depth=load.queue_depth,
        lanes=tuple(
            LaneLoad(_lane(lane.lane, f"load.lanes[{i}].lane"), lane.in_flight, lane.queued)
            for i, lane in enumerate(load.lanes)
        ),
        versions=tuple(
            VersionCounters(v.agent_version, v.started, v.succeeded, v.failed, v.slow, v.in_flight)
            for v in versions
        ),
        named_metrics=dict(load.named_metrics),
    )


def _usage(usage: agent_pb2.UsageReport) -> UsageReport:
    return UsageReport(
        report_id=usage.report_id,
        reservation_id=usage.reservation_id,
        requests=usage.usage.requests,
        input_tokens=usage.usage.input_tokens,
        output_tokens=usage.usage.output_tokens,
        final=usage.final,
        outcome=OUTCOME_NAMES.get(usage.outcome, ""),
        duration_s=usage.duration.ToTimedelta().total_seconds(),
        agent_version=usage.agent_version,
    )


def _observation(item: agent_pb2.ProviderObservation) -> Observation:
    def count(name: str) -> float | None:
        return float(getattr(item, name)) if item.HasField(name) else None  # type: ignore[arg-type]

    def seconds(name: str) -> float | None:
        if not item.HasField(name):  # type: ignore[arg-type]
            return None
        return float(getattr(item, name).ToTimedelta().total_seconds())

    return Observation(
        observed_at=item.observed_at.seconds + item.observed_at.nanos / 1e9
        if item.HasField("observed_at")
        else time.time(),
        limit_requests=count("limit_requests"),
        remaining_requests=count("remaining_requests"),
        reset_requests_s=seconds("reset_requests"),
        limit_tokens=count("limit_tokens"),
        remaining_tokens=count("remaining_tokens"),
        reset_tokens_s=seconds("reset_tokens"),
        rate_limited=item.rate_limited,
        retry_after_s=seconds("retry_after"),
    )
