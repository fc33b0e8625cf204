"""RouteRequest -> RouteCall and Routed -> RouteDecision: every wire check of a Route call."""

from __future__ import annotations

import time

from dispatcher.errors import InvalidArgument
from dispatcher.ledger import TokenEstimate
from dispatcher.router import CHOICE_SEP, RouteCall, Routed, split_version
from dispatcher.routing.model import Outcome
from dispatcher.rpc import convert
from dispatcher.v1 import routing_pb2

MAX_SESSION_KEY_BYTES = 256
MAX_ESTIMATE_TOKENS = 10_000_000  # far above any model's context; above it is a caller bug
DEFAULT_LEASE_S = 60.0

OUTCOME_TO_PB = {
    Outcome.ROUTED: routing_pb2.ROUTE_OUTCOME_ROUTED,
    Outcome.FALLBACK: routing_pb2.ROUTE_OUTCOME_FALLBACK,
    Outcome.MAINTENANCE: routing_pb2.ROUTE_OUTCOME_MAINTENANCE,
}


def estimate_of(request: routing_pb2.RouteRequest) -> TokenEstimate | None:
    if not request.HasField("estimate"):
        return None
    given = request.estimate
    for name in ("input_tokens", "max_output_tokens", "requests"):
        value = getattr(given, name)
        if value < 0:
            raise InvalidArgument(f"estimate.{name}", "must not be negative")
        if value > MAX_ESTIMATE_TOKENS:
            raise InvalidArgument(f"estimate.{name}", f"above {MAX_ESTIMATE_TOKENS:,}")
    if given.input_tokens == 0 and given.max_output_tokens == 0:
        raise InvalidArgument("estimate", "is empty; leave it unset to use the learned estimate")
    return TokenEstimate(float(given.input_tokens), float(given.max_output_tokens))


def route_call(request: routing_pb2.RouteRequest) -> RouteCall:
    """Validate ``request``; every problem is an InvalidArgument naming its field."""
    agent = convert.required_id(request.agent, "agent")
    if len(request.session_key.encode()) > MAX_SESSION_KEY_BYTES:
        raise InvalidArgument("session_key", f"longer than {MAX_SESSION_KEY_BYTES} bytes")
    if not -100 <= request.priority <= 100:
        raise InvalidArgument("priority", "must be between -100 and 100")
    if request.HasField("deadline") and request.deadline.ToNanoseconds() / 1e9 <= time.time():
        raise InvalidArgument("deadline", "is already past")
    task_class = convert.LANE_FROM_PB.get(request.task_class)
    return RouteCall(
        request_id=convert.required_id(request.request_id, "request_id"),
        route=convert.required_id(request.route, "route"),
        agent=agent,
        version=split_version(agent, request.agent_version),
        task_class=task_class.value if task_class else None,
        expected_duration=(
            convert.seconds_of(request.expected_duration, "expected_duration")
            if request.HasField("expected_duration")
            else None
        ),
        estimate=estimate_of(request),
        session_key=request.session_key,
        lease_s=(
            convert.lease_of(request.lease, "lease")
            if request.HasField("lease")
            else DEFAULT_LEASE_S
        ),
    )


def decision_pb(request_id: str, routed: Routed) -> routing_pb2.RouteDecision:
    decision = routing_pb2.RouteDecision(
        outcome=OUTCOME_TO_PB[routed.outcome],
        request_id=request_id,
        reason=routed.reason,
        maintenance_message=routed.message,
        handover_from=routed.handover_from or "",
    )
    if routed.choice is None or routed.reservation is None:
        return decision
    choice, reservation = routed.choice, routed.reservation
    cluster = decision.cluster  # filled in place: no message built only to be copied
    cluster.id, cluster.region, cluster.endpoint = choice.cluster_id, routed.region, routed.endpoint
    decision.backend = choice.backend
    decision.agent_version = choice.version
    decision.lane = convert.LANE_TO_PB[choice.lane]
    decision.reservation_id = reservation.reservation_id
    decision.task_id = reservation.reservation_id
    decision.result_token = routed.result_token
    convert.add_charges(decision.reserved, reservation.cost)
    decision.lease_expires_at.FromNanoseconds(int(reservation.lease_expires_at * 1e9))
    if reservation.spilled_from:
        decision.spilled_from = reservation.spilled_from.split(CHOICE_SEP)[0]
    return decision
