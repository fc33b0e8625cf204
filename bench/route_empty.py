"""The baseline of ``bench.route``: a bare grpc.aio server whose RoutingService does nothing.

    python -m bench.route_empty [--listen 127.0.0.1:0]

``Route`` answers one constant ``RouteDecision`` and ``Release`` an empty
``ReleaseResponse``. The decision names a reservation, so the load generator drives this
server exactly as it drives the dispatcher: Route, then Release of that reservation (an
empty decision made it skip the Release, and the baseline measured half the calls). Prints
``{"port": N}`` on stdout once serving; stops on SIGTERM / SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import Any

import grpc

from dispatcher import event_loop
from dispatcher.v1 import routing_pb2, routing_pb2_grpc

EMPTY_DECISION = routing_pb2.RouteDecision(reservation_id="empty")
EMPTY_RELEASE = routing_pb2.ReleaseResponse()


class EmptyRouting(routing_pb2_grpc.RoutingServiceServicer):
    async def Route(
        self, request: routing_pb2.RouteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> routing_pb2.RouteDecision:
        return EMPTY_DECISION

    async def Release(
        self, request: routing_pb2.ReleaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> routing_pb2.ReleaseResponse:
        return EMPTY_RELEASE

    async def Settle(
        self, request: routing_pb2.SettleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> routing_pb2.SettleResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the baseline")
        raise AssertionError("abort raises")

    async def Extend(
        self, request: routing_pb2.ExtendRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> routing_pb2.ExtendResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the baseline")
        raise AssertionError("abort raises")


async def serve(listen: str) -> None:
    server = grpc.aio.server()
    routing_pb2_grpc.add_RoutingServiceServicer_to_server(EmptyRouting(), server)
    port = server.add_insecure_port(listen)
    await server.start()
    print(json.dumps({"port": port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.route_empty")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--event-loop", choices=event_loop.CHOICES, default="auto")
    args = parser.parse_args()
    event_loop.run(serve(args.listen), args.event_loop)


if __name__ == "__main__":
    main()
