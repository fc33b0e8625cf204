"""Watch events between ``dispatcher.watch`` and ``admin.proto``."""

from __future__ import annotations

from dispatcher.errors import InvalidArgument
from dispatcher.rpc import convert
from dispatcher.v1 import admin_pb2
from dispatcher.watch import WatchEvent, WatchKind

KIND_TO_PB = {
    WatchKind.DECISION: admin_pb2.EVENT_TYPE_DECISION,
    WatchKind.SPILLOVER: admin_pb2.EVENT_TYPE_SPILLOVER,
    WatchKind.BREAKER: admin_pb2.EVENT_TYPE_BREAKER,
    WatchKind.HANDOVER: admin_pb2.EVENT_TYPE_HANDOVER,
    WatchKind.DRAIN: admin_pb2.EVENT_TYPE_DRAIN,
    WatchKind.EJECTION: admin_pb2.EVENT_TYPE_EJECTION,
    WatchKind.LIMITS: admin_pb2.EVENT_TYPE_LIMITS,
}
KIND_FROM_PB = {pb: kind for kind, pb in KIND_TO_PB.items()}


def watch_kind_of(value: admin_pb2.EventType.ValueType, field: str) -> WatchKind:
    kind = KIND_FROM_PB.get(value)
    if kind is None:
        raise InvalidArgument(field, f"unknown event type {value}")
    return kind


def event_pb(event: WatchEvent) -> admin_pb2.Event:
    return admin_pb2.Event(
        type=KIND_TO_PB[event.kind],
        at=convert.timestamp_of(event.at),
        cluster_id=event.cluster_id,
        pool_id=event.pool_id,
        agent_version=event.agent_version,
        summary=event.summary,
        attributes=dict(event.attributes),
    )
