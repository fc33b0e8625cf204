"""The baselines of ``bench.route``: bare grpc.aio servers of the RoutingService.

    python -m bench.route_empty [--listen 127.0.0.1:0] [--floor-redis-url URL]

``Route`` answers one constant ``RouteDecision`` and ``Release`` an empty
``ReleaseResponse``. The decision names a reservation, so the load generator drives this
server exactly as it drives the dispatcher: Route, then Release of that reservation (an
empty decision made it skip the Release, and the baseline measured half the calls).

With ``--floor-redis-url``, each call first makes one script call (``return 1``) on that
Redis through the ledger's own pipelined connection (``dispatcher.ledger.redis_pipe``): the
floor of a handler that needs the one hot-store round trip every Route and Release makes,
so what the dispatcher costs above it is its own work. Prints ``{"port": N}`` on stdout
once serving; stops on SIGTERM / SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
from typing import Any

import grpc

from dispatcher import event_loop
from dispatcher.heap import prepare_heap_for_serving
from dispatcher.ledger.redis_pipe import ScriptPipe
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


FLOOR_SCRIPT = "return 1"
FLOOR_SHA = hashlib.sha1(FLOOR_SCRIPT.encode()).hexdigest()
FLOOR_TIMEOUT_S = 0.25  # the ledger's call_timeout


class FloorRouting(EmptyRouting):
    """Each call makes one pipelined script call first (a NOSCRIPT sends the text once)."""

    def __init__(self, pipe: ScriptPipe) -> None:
        self.pipe = pipe

    async def _round_trip(self) -> None:
        deadline = asyncio.get_running_loop().time() + FLOOR_TIMEOUT_S
        await self.pipe.call(FLOOR_SHA, FLOOR_SCRIPT, (), (), deadline)

    async def Route(
        self, request: routing_pb2.RouteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> routing_pb2.RouteDecision:
        await self._round_trip()
        return EMPTY_DECISION

    async def Release(
        self, request: routing_pb2.ReleaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> routing_pb2.ReleaseResponse:
        await self._round_trip()
        return EMPTY_RELEASE


async def serve(listen: str, floor_redis_url: str | None = None) -> None:
    server = grpc.aio.server()
    pipe = ScriptPipe.from_url(floor_redis_url) if floor_redis_url else None
    servicer = FloorRouting(pipe) if pipe else EmptyRouting()
    routing_pb2_grpc.add_RoutingServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port(listen)
    await server.start()
    # The heap treatment ``dispatcher serve`` gets, so the baselines are not handicapped by
    # collections the dispatcher no longer runs.
    prepare_heap_for_serving()
    print(json.dumps({"port": port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)
    if pipe is not None:
        await pipe.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.route_empty")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--event-loop", choices=event_loop.CHOICES, default="auto")
    parser.add_argument("--floor-redis-url", help="one script call on this Redis per call")
    args = parser.parse_args()
    event_loop.run(serve(args.listen, args.floor_redis_url), args.event_loop)


if __name__ == "__main__":
    main()
