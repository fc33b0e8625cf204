"""Servicers for the four dispatcher.v1 services.

This is the translation layer between protobuf and the domain (DESIGN §4): nothing below
``rpc/`` imports protobuf or grpc. Capabilities that are not built yet answer UNIMPLEMENTED
with a message naming them, so a client can tell "not here yet" from "broken".
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from dispatcher.errors import InvalidArgument, NotBuilt
from dispatcher.ledger import Cost, Ledger, ReservationState, SettleResult
from dispatcher.rpc import convert
from dispatcher.rpc.handlers import Context, streaming, unary
from dispatcher.v1 import (
    result_pb2,
    result_pb2_grpc,
    routing_pb2,
    routing_pb2_grpc,
)

ROUTING = "routing engine"
MAX_REASON_BYTES = 256
RELAY = "result relay"


class RoutingServicer(routing_pb2_grpc.RoutingServiceServicer):
    """Route (not built yet) and the ledger operations on a reservation it made."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    @unary
    async def Route(
        self, request: routing_pb2.RouteRequest, context: Context
    ) -> routing_pb2.RouteDecision:
        raise NotBuilt(f"RoutingService.Route ({ROUTING})")

    @unary
    async def Settle(
        self, request: routing_pb2.SettleRequest, context: Context
    ) -> routing_pb2.SettleResponse:
        reservation_id = convert.required_id(request.reservation_id, "reservation_id")
        outcome = convert.outcome_of(request.outcome)
        usage = convert.usage_of(request.usage)
        convert.seconds_of(request.duration, "duration")
        result = await self.ledger.settle(reservation_id, usage, outcome)
        return routing_pb2.SettleResponse(
            state=convert.STATE_TO_PB[result.reservation.state],
            already_settled=result.replayed,
            refunded=convert.charges_pb(result.adjustment, sign=-1.0),
            debt=convert.charges_pb(overdraw(result)),
        )

    @unary
    async def Release(
        self, request: routing_pb2.ReleaseRequest, context: Context
    ) -> routing_pb2.ReleaseResponse:
        reservation_id = convert.required_id(request.reservation_id, "reservation_id")
        if len(request.reason.encode()) > MAX_REASON_BYTES:
            raise InvalidArgument("reason", f"longer than {MAX_REASON_BYTES} bytes")
        before = await self.ledger.get(reservation_id)
        after = await self.ledger.release(reservation_id)
        given_back = before.state is ReservationState.RESERVED
        refunded = before.cost if given_back and after.state is ReservationState.RELEASED else {}
        return routing_pb2.ReleaseResponse(
            state=convert.STATE_TO_PB[after.state], refunded=convert.charges_pb(refunded)
        )

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


class ResultServicer(result_pb2_grpc.ResultServiceServicer):
    @unary
    async def Publish(
        self, request: result_pb2.PublishRequest, context: Context
    ) -> result_pb2.PublishResponse:
        raise NotBuilt(f"ResultService.Publish ({RELAY})")

    @streaming
    async def AwaitResult(
        self, request: result_pb2.AwaitResultRequest, context: Context
    ) -> AsyncIterator[result_pb2.ResultEvent]:
        raise NotBuilt(f"ResultService.AwaitResult ({RELAY})")
        yield  # pragma: no cover - makes this an async generator
