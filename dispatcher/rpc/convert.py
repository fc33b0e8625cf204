"""Protobuf <-> domain translation for the routing and ledger RPCs.

Every check of a request field that the domain types cannot express lives here and raises
``InvalidArgument`` naming the field as the caller wrote it on the wire.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from google.protobuf.duration_pb2 import Duration
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from google.protobuf.timestamp_pb2 import Timestamp

from dispatcher.errors import InvalidArgument
from dispatcher.fleet.model import AdminState, Lane
from dispatcher.ledger import Cost, ReservationState, Usage
from dispatcher.v1 import common_pb2

MAX_ID_BYTES = 128
MIN_LEASE_S = 1.0
MAX_LEASE_S = 3600.0

STATE_TO_PB: Mapping[ReservationState, common_pb2.ReservationState.ValueType] = {
    ReservationState.RESERVED: common_pb2.RESERVATION_STATE_RESERVED,
    ReservationState.IN_FLIGHT: common_pb2.RESERVATION_STATE_IN_FLIGHT,
    ReservationState.SETTLED: common_pb2.RESERVATION_STATE_SETTLED,
    ReservationState.RELEASED: common_pb2.RESERVATION_STATE_RELEASED,
    ReservationState.ABANDONED: common_pb2.RESERVATION_STATE_ABANDONED,
}

# Outcome names as the ledger and breakers record them: "success", "failure", "timeout", ...
OUTCOME_NAMES: Mapping[common_pb2.TaskOutcome.ValueType, str] = {
    value: name.removeprefix("TASK_OUTCOME_").lower()
    for name, value in common_pb2.TaskOutcome.items()
    if value != common_pb2.TASK_OUTCOME_UNSPECIFIED
}

LANE_FROM_PB: Mapping[common_pb2.TaskClass.ValueType, Lane] = {
    common_pb2.TASK_CLASS_LIGHT: Lane.LIGHT,
    common_pb2.TASK_CLASS_STANDARD: Lane.STANDARD,
    common_pb2.TASK_CLASS_HEAVY: Lane.HEAVY,
}
#: Keyed by text: a Lane is a str, and a decision's choice carries its lane as text (no
#: Enum call per Route).
LANE_TO_PB: Mapping[str, common_pb2.TaskClass.ValueType] = {
    lane: value for value, lane in LANE_FROM_PB.items()
}

ADMIN_FROM_PB: Mapping[common_pb2.AdminState.ValueType, AdminState] = {
    common_pb2.ADMIN_STATE_READY: AdminState.READY,
    common_pb2.ADMIN_STATE_DRAIN: AdminState.DRAIN,
    common_pb2.ADMIN_STATE_MAINT: AdminState.MAINT,
}
ADMIN_TO_PB = {state: value for value, state in ADMIN_FROM_PB.items()}


def required_id(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value.encode()) > MAX_ID_BYTES:
        raise InvalidArgument(field, f"longer than {MAX_ID_BYTES} bytes")
    return value


def seconds_of(duration: Duration, field: str) -> float:
    seconds = duration.seconds + duration.nanos / 1e9
    if seconds < 0 or not math.isfinite(seconds):
        raise InvalidArgument(field, "must not be negative")
    return seconds


def lease_of(duration: Duration, field: str) -> float:
    seconds = seconds_of(duration, field)
    if not MIN_LEASE_S <= seconds <= MAX_LEASE_S:
        raise InvalidArgument(field, f"must be between {MIN_LEASE_S:g} s and {MAX_LEASE_S:g} s")
    return seconds


def outcome_of(outcome: common_pb2.TaskOutcome.ValueType) -> str:
    name = OUTCOME_NAMES.get(outcome)
    if name is None:
        raise InvalidArgument("outcome", "is required (SUCCESS, FAILURE, TIMEOUT, ...)")
    return name


def usage_of(usage: common_pb2.Usage, field: str = "usage") -> Usage:
    for name in ("requests", "input_tokens", "output_tokens"):
        if getattr(usage, name) < 0:
            raise InvalidArgument(f"{field}.{name}", "must not be negative")
    return Usage(
        requests=float(usage.requests),
        input_tokens=float(usage.input_tokens),
        output_tokens=float(usage.output_tokens),
    )


def timestamp_of(unix_seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(unix_seconds * 1e9))
    return stamp


def add_charges(
    into: RepeatedCompositeFieldContainer[common_pb2.PoolCharge],
    costs: Mapping[str, Cost],
    sign: float = 1.0,
) -> None:
    """Append one PoolCharge per pool whose ``sign``-scaled cost is positive in some dimension.

    Filled in place: a sub-message passed to a constructor is copied (serialised and parsed
    again), and Route and Release each answer with charges. Spelled out field by field: the
    list, ``any`` and ``map`` of a generic loop over ``as_tuple()`` doubled its cost."""
    for pool_id in sorted(costs):
        cost = costs[pool_id]
        requests, tokens = sign * cost.requests, sign * cost.tokens
        input_tokens, output_tokens = sign * cost.input_tokens, sign * cost.output_tokens
        if requests > 0 or tokens > 0 or input_tokens > 0 or output_tokens > 0:
            charge = into.add()
            charge.pool_id = pool_id
            out = charge.cost  # a dimension the sign makes negative is charged nothing
            out.requests = round(requests) if requests > 0 else 0
            out.tokens = round(tokens) if tokens > 0 else 0
            out.input_tokens = round(input_tokens) if input_tokens > 0 else 0
            out.output_tokens = round(output_tokens) if output_tokens > 0 else 0
