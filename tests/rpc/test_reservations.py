"""Settle / Release / Extend over a real socket against the embedded ledger.

Route is not built yet, so each test reserves through the server's own ledger, then drives
the reservation's life over gRPC exactly as a caller would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from dispatcher.ledger import Candidate, Reservation, ReserveRequest, TokenEstimate
from dispatcher.server import DispatcherServer
from dispatcher.v1 import common_pb2, routing_pb2, routing_pb2_grpc
from tests.rpc.conftest import embedded_config

POOL = {"id": "openai/org-x", "tpm": 100_000, "rpm": 100}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[DispatcherServer]:
    srv = DispatcherServer(embedded_config(tmp_path, pools=[POOL]))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(grace=0)


@pytest.fixture
async def stub(server: DispatcherServer) -> AsyncIterator[routing_pb2_grpc.RoutingServiceStub]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield routing_pb2_grpc.RoutingServiceStub(channel)


async def reserve(server: DispatcherServer, request_id: str = "req-1") -> Reservation:
    candidate = Candidate("eu-1", ("openai/org-x",), TokenEstimate(1000, 500))
    result = await server.runtime.ledger.reserve(ReserveRequest(request_id, (candidate,)))
    assert isinstance(result, Reservation)
    return result


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_settle_closes_the_reservation_once(
    server: DispatcherServer, stub: routing_pb2_grpc.RoutingServiceStub
) -> None:
    held = await reserve(server)
    request = routing_pb2.SettleRequest(
        reservation_id=held.reservation_id,
        usage=common_pb2.Usage(requests=1, input_tokens=800, output_tokens=100),
        outcome=common_pb2.TASK_OUTCOME_SUCCESS,
    )
    first = await stub.Settle(request)
    assert first.state == common_pb2.RESERVATION_STATE_SETTLED
    assert not first.already_settled
    assert [c.pool_id for c in first.refunded] == ["openai/org-x"]
    assert first.refunded[0].cost.tokens == 1500 - 900
    again = await stub.Settle(request)
    assert again.already_settled
    assert again.state == common_pb2.RESERVATION_STATE_SETTLED


async def test_usage_beyond_the_reservation_is_reported_as_debt(
    server: DispatcherServer, stub: routing_pb2_grpc.RoutingServiceStub
) -> None:
    held = await reserve(server)
    reply = await stub.Settle(
        routing_pb2.SettleRequest(
            reservation_id=held.reservation_id,
            usage=common_pb2.Usage(requests=1, input_tokens=1000, output_tokens=2500),
            outcome=common_pb2.TASK_OUTCOME_SUCCESS,
        )
    )
    assert reply.debt[0].cost.tokens == 3500 - 1500
    snapshot = await server.runtime.ledger.snapshot("openai/org-x")
    # The bucket refills continuously, so "used" has already decayed a little below 3500.
    assert snapshot.dims["tpm"].used > 3000


async def test_release_refunds_a_reserved_lease(
    server: DispatcherServer, stub: routing_pb2_grpc.RoutingServiceStub
) -> None:
    held = await reserve(server)
    reply = await stub.Release(routing_pb2.ReleaseRequest(reservation_id=held.reservation_id))
    assert reply.state == common_pb2.RESERVATION_STATE_RELEASED
    assert reply.refunded[0].cost.tokens == 1500
    snapshot = await server.runtime.ledger.snapshot("openai/org-x")
    assert snapshot.dims["tpm"].reserved == 0


async def test_extend_marks_dispatched_and_moves_the_lease(
    server: DispatcherServer, stub: routing_pb2_grpc.RoutingServiceStub
) -> None:
    held = await reserve(server)
    reply = await stub.Extend(
        routing_pb2.ExtendRequest(
            reservation_id=held.reservation_id, dispatched=True, lease=Duration(seconds=600)
        )
    )
    assert reply.state == common_pb2.RESERVATION_STATE_IN_FLIGHT
    assert reply.lease_expires_at.ToSeconds() > held.lease_expires_at + 500
    # Dispatched work has been charged by the provider: it is settled, never released.
    error = await rpc_error(
        stub.Release(routing_pb2.ReleaseRequest(reservation_id=held.reservation_id))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"outcome": common_pb2.TASK_OUTCOME_SUCCESS}, "reservation_id"),
        (
            {"reservation_id": "x" * 200, "outcome": common_pb2.TASK_OUTCOME_SUCCESS},
            "reservation_id",
        ),
        ({"reservation_id": "r"}, "outcome"),
        (
            {
                "reservation_id": "r",
                "outcome": common_pb2.TASK_OUTCOME_SUCCESS,
                "usage": common_pb2.Usage(input_tokens=-1),
            },
            "usage.input_tokens",
        ),
        (
            {
                "reservation_id": "r",
                "outcome": common_pb2.TASK_OUTCOME_SUCCESS,
                "duration": Duration(seconds=-3),
            },
            "duration",
        ),
    ],
)
async def test_bad_settle_is_invalid_argument_naming_the_field(
    stub: routing_pb2_grpc.RoutingServiceStub, request_fields: dict[str, object], field: str
) -> None:
    error = await rpc_error(stub.Settle(routing_pb2.SettleRequest(**request_fields)))  # type: ignore[arg-type]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith(f"{field}:")


async def test_lease_out_of_range_is_invalid_argument(
    server: DispatcherServer, stub: routing_pb2_grpc.RoutingServiceStub
) -> None:
    held = await reserve(server)
    error = await rpc_error(
        stub.Extend(
            routing_pb2.ExtendRequest(
                reservation_id=held.reservation_id, lease=Duration(seconds=7200)
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "lease" in (error.details() or "")


async def test_unknown_reservation_is_not_found(stub: routing_pb2_grpc.RoutingServiceStub) -> None:
    error = await rpc_error(
        stub.Settle(
            routing_pb2.SettleRequest(
                reservation_id="openai/org-x#" + "0" * 32, outcome=common_pb2.TASK_OUTCOME_FAILURE
            )
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
