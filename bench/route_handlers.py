"""The dispatcher's own Python per Route + Release: RoutingService's handlers called in-process
on the Redis ledger, with no gRPC between caller and handler (DESIGN §10).

    python -m bench.route_handlers [--pairs 20000] [--rounds 3] [--concurrency 64] [--clusters 4]
        [--redis-url redis://127.0.0.1:6379/14] [--flush-redis]
        [--event-loop auto|uvloop|asyncio] [--pin auto|off] [--json] [--check]

``bench.route`` measures whole servers: what a Route + Release costs the dispatcher's
process above an empty grpc.aio handler's. That difference has two parts, and this bench
measures the first alone: the dispatcher's Python (wire checks, the engine, the ledger
client and its batching, the decision's protobuf, metrics) against the rest (gRPC's extra
thread wake-ups around a handler that waits on Redis, the Redis socket's system calls).

It starts a dispatcher in this process on ``bench.route``'s config (Redis database 14,
which it flushes and owns as ``bench.route`` does; SQLite durable ledger in a temp dir; the
journal is left in Redis, as with an external consumer), registers ``--clusters`` clusters
through real ``AgentService.Connect`` streams, prepares the heap as ``dispatcher serve``
does (``dispatcher.heap``), then has ``--concurrency`` coroutines each call the servicer's
``Route`` and then ``Release`` of the reservation, ``--pairs`` pairs in all. With
``--pin auto`` (default) it runs on one CPU, as bench.route's servers do.

The baseline, in the same run and the same way: ``bench.route_empty``'s floor handlers, whose
Route and Release each make just one pipelined script call (``return 1``) on the same Redis.
The two alternate, ``--rounds`` times ``--pairs`` pairs each, so the machine's noise hits
both alike.

Printed: ``handler_cpu_us_per_pair`` (this process's CPU over the timed pairs, the Redis
client's included, divided by them), ``gc_us_per_pair`` (the cyclic collector's share of
it), ``pairs_per_s``, the floor's ``floor_cpu_us_per_pair``, ``handler_over_floor`` and
``errors``; beside them each one's ``_best`` round. The best round is the steadiest
figure for comparing two versions of the code: on a shared VM, noise only ever adds CPU
time, and here it swung whole runs by a third. ``--check`` exits 1 on errors only, never
on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import redis

from bench import bench_db
from bench.output import finish
from bench.route import CONFIG, clusters, pinning
from bench.route_empty import FloorRouting
from dispatcher import event_loop
from dispatcher.config import load_config
from dispatcher.heap import prepare_heap_for_serving
from dispatcher.ledger.redis_pipe import ScriptPipe
from dispatcher.logs import configure_logging
from dispatcher.rpc.routing_service import RoutingServicer
from dispatcher.server import DispatcherServer
from dispatcher.v1 import common_pb2, routing_pb2

WARM_UP_PAIRS_PER_CALLER = 20


class CallerContext:
    """What the handlers ask of a gRPC servicer context, for a call that came in-process: no
    metadata; an abort is an error this bench counts."""

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNKNOWN

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise RuntimeError(f"{code.name}: {details}")

    async def abort_with_status(self, status: Any) -> None:
        raise RuntimeError(f"{status.code.name}: {status.details}")


class GcTimer:
    """Seconds the cyclic collector ran while installed (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:  # installed mid-collection: that one's start was not seen
            self.seconds += time.perf_counter() - self._started
            self._started = 0.0


class Pairs:
    """Route then Release, by many coroutines, through the servicer's own methods."""

    def __init__(self, servicer: RoutingServicer) -> None:
        self.servicer = servicer
        self.context: Any = CallerContext()
        self.ids = itertools.count(1)
        self.errors: list[str] = []
        self.estimate = common_pb2.TokenEstimate(input_tokens=100, max_output_tokens=100)

    async def one(self) -> None:
        request = routing_pb2.RouteRequest(
            request_id=f"handlers-{next(self.ids)}",
            route="chat-default",
            agent="auditor",
            estimate=self.estimate,
        )
        try:
            decision = await self.servicer.Route(request, self.context)
            release = routing_pb2.ReleaseRequest(reservation_id=decision.reservation_id)
            await self.servicer.Release(release, self.context)
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    async def run(self, callers: int, pairs_each: int) -> None:
        async def caller() -> None:
            for _ in range(pairs_each):
                await self.one()

        await asyncio.gather(*(caller() for _ in range(callers)))


def dispatcher_config(args: argparse.Namespace, workdir: Path) -> Any:
    path = workdir / "dispatcher.yaml"
    path.write_text(f"durable:\n  consumer: external\n{CONFIG}")
    overrides = {
        "server.listen": "127.0.0.1:0",
        "hot_store.url": args.redis_url,
        "durable.database_url": f"sqlite+aiosqlite:///{workdir / 'ledger.sqlite3'}",
    }
    return load_config(path, env={}, overrides=overrides)


@dataclass
class Timed:
    cpu_s: float
    wall_s: float
    gc_s: float
    pairs: int

    @property
    def cpu_us_per_pair(self) -> float:
        return self.cpu_s / self.pairs * 1e6

    @classmethod
    def total(cls, rounds: Sequence[Timed]) -> Timed:
        return cls(
            sum(r.cpu_s for r in rounds),
            sum(r.wall_s for r in rounds),
            sum(r.gc_s for r in rounds),
            sum(r.pairs for r in rounds),
        )


async def timed(pairs: Pairs, callers: int, total: int) -> Timed:
    """``total`` pairs, after a warm-up: rounded down to a multiple of ``callers``, and at
    least one per caller."""
    await pairs.run(callers, WARM_UP_PAIRS_PER_CALLER)
    each = max(1, total // callers)
    timer = GcTimer()
    gc.callbacks.append(timer)
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        await pairs.run(callers, each)
    finally:
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        gc.callbacks.remove(timer)
    return Timed(cpu, wall, timer.seconds, each * callers)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    client = redis.Redis.from_url(args.redis_url)
    try:
        bench_db.claim(client, args.redis_url, force=args.flush_redis)
    finally:
        client.close()
    with tempfile.TemporaryDirectory(prefix="bench-handlers-") as tmp:
        server = DispatcherServer(dispatcher_config(args, Path(tmp)))
        await server.start()
        registration_errors: list[str] = []
        routed_rounds: list[Timed] = []
        floor_rounds: list[Timed] = []
        pipe = ScriptPipe.from_url(args.redis_url)
        try:
            async with clusters(server.address, args.clusters, registration_errors):
                runtime = server.runtime
                prepare_heap_for_serving()  # as ``dispatcher serve`` does once it is up
                handlers = Pairs(RoutingServicer(runtime.ledger, runtime.router))
                floor_handlers = Pairs(FloorRouting(pipe))
                for _ in range(args.rounds):  # alternating, so noise hits both alike
                    routed_rounds.append(await timed(handlers, args.concurrency, args.pairs))
                    floor_rounds.append(await timed(floor_handlers, args.concurrency, args.pairs))
        finally:
            await pipe.aclose()
            await server.stop(grace=0)
    errors = registration_errors + handlers.errors + floor_handlers.errors
    routed, floor = Timed.total(routed_rounds), Timed.total(floor_rounds)
    per_pair, floor_per_pair = routed.cpu_us_per_pair, floor.cpu_us_per_pair
    best = min(r.cpu_us_per_pair for r in routed_rounds)
    floor_best = min(r.cpu_us_per_pair for r in floor_rounds)
    return {
        "handler_cpu_us_per_pair": round(per_pair, 1),
        "handler_cpu_us_per_pair_best": round(best, 1),
        "gc_us_per_pair": round(routed.gc_s / routed.pairs * 1e6, 1),
        "pairs_per_s": round(routed.pairs / routed.wall_s, 1),
        "floor_cpu_us_per_pair": round(floor_per_pair, 1),
        "floor_cpu_us_per_pair_best": round(floor_best, 1),
        "handler_over_floor": round(per_pair / floor_per_pair, 2),
        "handler_over_floor_best": round(best / floor_best, 2),
        "pairs": routed.pairs,
        "errors": len(errors),
        "error_samples": errors[:10],
        "settings": {
            "concurrency": args.concurrency,
            "clusters": args.clusters,
            "event_loop": event_loop.loop_name(),
            "pinned": args.pinned,
        },
    }


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.route_handlers", description=__doc__)
    parser.add_argument("--pairs", type=positive, default=20_000)
    parser.add_argument("--concurrency", type=positive, default=64)
    parser.add_argument("--rounds", type=positive, default=3)
    parser.add_argument("--clusters", type=positive, default=4)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    bench_db.add_flush_flag(parser)
    parser.add_argument("--event-loop", choices=event_loop.CHOICES, default="auto")
    parser.add_argument("--pin", choices=("auto", "off"), default="auto")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--check", action="store_true", help="exit 1 on errors")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("console", "error")  # the clusters' first Routes are refused by design
    pins = pinning(args.pin)
    args.pinned = pins is not None
    if pins is not None:
        os.sched_setaffinity(0, pins.servers)  # one CPU, as bench.route's servers have
    result = event_loop.run(measure(args), args.event_loop)
    problems = [f"{result['errors']} errors, e.g. {result['error_samples'][:3]}"]
    return finish(result, problems if result["errors"] else [], as_json=args.json, check=args.check)


if __name__ == "__main__":
    raise SystemExit(main())
