"""RoutingService: Route, and Settle / Release / Extend of the reservation a Route made."""

from __future__ import annotations

from dispatcher.errors import InvalidArgument
from dispatcher.ledger import Cost, Ledger, ReservationState, SettleResult
from dispatcher.router import Router
from dispatcher.rpc import convert, route_convert
from dispatcher.rpc.handlers import Context, unary
from dispatcher.v1 import routing_pb2, routing_pb2_grpc

MAX_REASON_BYTES = 256


class RoutingServicer(routing_pb2_grpc.RoutingServiceServicer):
    """Route, and the ledger operations on the reservation a Route made."""

    def __init__(self, ledger: Ledger, router: Router) -> None:
        self.ledger = ledger
        self.router = router
        self.observe_rpc = router.metrics.observe_rpc  # each call's time (rpc.handlers)

    @unary
    async def Route(
        self, request: routing_pb2.RouteRequest, context: Context
    ) -> routing_pb2.RouteDecision:
        call = route_convert.route_call(request)
        routed = await self.router.route(call)
        return route_convert.decision_pb(call.request_id, routed)

    @unary
    async def Settle(
        self, request: routing_pb2.SettleRequest, context: Context
    ) -> routing_pb2.SettleResponse:
        reservation_id = convert.required_id(request.reservation_id, "reservation_id")
        outcome = convert.outcome_of(request.outcome)
        usage = convert.usage_of(request.usage)
        duration = convert.seconds_of(request.duration, "duration")
        result = await self.ledger.settle(reservation_id, usage, outcome)
        if not result.replayed:
            self.router.settled(result.reservation, usage, outcome, duration)
        response = routing_pb2.SettleResponse(
            state=convert.STATE_TO_PB[result.reservation.state], already_settled=result.replayed
        )
        convert.add_charges(response.refunded, result.adjustment, sign=-1.0)
        convert.add_charges(response.debt, overdraw(result))
        return response

    @unary
    async def Release(
        self, request: routing_pb2.ReleaseRequest, context: Context
    ) -> routing_pb2.ReleaseResponse:
        reservation_id = convert.required_id(request.reservation_id, "reservation_id")
        if len(request.reason.encode()) > MAX_REASON_BYTES:
            raise InvalidArgument("reason", f"longer than {MAX_REASON_BYTES} bytes")
        # One round trip: the ledger refuses anything but a RESERVED reservation, and
        # ``replayed`` says another Release got there first (concurrently or before).
        after = await self.ledger.release(reservation_id)
        released_now = after.state is ReservationState.RELEASED and not after.replayed
        if released_now:
            self.router.released(after)
        response = routing_pb2.ReleaseResponse(state=convert.STATE_TO_PB[after.state])
        if released_now:
            convert.add_charges(response.refunded, after.cost)
        return response

    @unary
    async def Extend(
        self, request: routing_pb2.ExtendRequest, context: Context
    ) -> routing_pb2.ExtendResponse:
        reservation_id = convert.required_id(request.reservation_id, "reservation_id")
        lease = convert.lease_of(request.lease, "lease") if request.HasField("lease") else None
        delta = convert.usage_of(request.usage_delta, "usage_delta")
        reservation = await self.ledger.get(reservation_id)
        if request.dispatched:
            reservation = await self.ledger.ack_dispatched(reservation_id)
        if any((delta.requests, delta.input_tokens, delta.output_tokens)):
            reservation = await self.ledger.report_usage(reservation_id, delta)
        if lease is not None:
            reservation = await self.ledger.extend(reservation_id, lease)
        return routing_pb2.ExtendResponse(
            state=convert.STATE_TO_PB[reservation.state],
            lease_expires_at=convert.timestamp_of(reservation.lease_expires_at),
        )


def overdraw(result: SettleResult) -> dict[str, Cost]:
    """Usage charged beyond what was reserved, per pool: the debt the pools now carry."""
    held = result.reservation.cost
    return {pool: cost - held[pool] for pool, cost in result.charged.items() if pool in held}
