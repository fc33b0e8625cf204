"""Load generator of ``bench.route``: many concurrent Route callers on a few channels.

    python -m bench.route_load --target HOST:PORT [--callers 64] [--channels 4]
        [--warmup 1] [--seconds 5] [--prefix run1] [--expect-routed] [--no-release] [--rate R]

Each caller loops: ``Route`` (a fresh request id), then ``Release`` of the reservation it got,
so quota pools never fill; as fast as it can, or with ``--rate`` at Poisson arrivals that
offer that many Routes per second across the callers. Only Route latency is timed. Output,
one JSON object a line on stdout: ``{"event": "measuring"}`` when the timed window starts,
``{"event": "measured"}`` when it ends (the parent samples server CPU at both), then the result::

    {"event": "result", "routes": N, "releases": R, "seconds": S, "errors": E,
     "error_samples": [...], "p50_ms": x, "p99_ms": y, "cpu_s": generator CPU in the window}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import grpc
import psutil

from dispatcher import event_loop
from dispatcher.heap import prepare_heap_for_serving
from dispatcher.v1 import common_pb2, routing_pb2, routing_pb2_grpc

ROUTED = routing_pb2.ROUTE_OUTCOME_ROUTED


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Tally:
    def __init__(self) -> None:
        self.measuring = False
        self.routes = 0
        self.releases = 0  # of the routes counted: each is followed by one Release
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()

    def error(self, what: str) -> None:
        self.errors[what[:200]] += 1


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


class Pace:
    """Poisson arrivals at ``rate`` per second for one caller: each start is drawn from the
    previous scheduled start (not from when the last call ended), so the callers together
    offer the rate whatever the latency, as long as they keep up; a caller behind goes at
    once."""

    def __init__(self, rate: float, seed: int) -> None:
        self._rng = random.Random(seed)
        self._rate = rate
        self._next = time.perf_counter()

    async def wait(self) -> None:
        self._next += self._rng.expovariate(self._rate)
        delay = self._next - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)


async def caller(
    stub: Any,  # RoutingServiceStub; the generated stubs are typed as if synchronous
    index: int,
    args: argparse.Namespace,
    tally: Tally,
    stop: asyncio.Event,
) -> None:
    estimate = common_pb2.TokenEstimate(input_tokens=100, max_output_tokens=100)
    pace = Pace(args.rate / args.callers, seed=index) if args.rate else None
    n = 0
    while not stop.is_set():
        if pace is not None:
            await pace.wait()
        n += 1
        request = routing_pb2.RouteRequest(
            request_id=f"{args.prefix}-{index}-{n}",
            route="chat-default",
            agent="auditor",
            estimate=estimate,
        )
        began = time.perf_counter()
        try:
            decision = await stub.Route(request)
        except grpc.aio.AioRpcError as exc:
            tally.error(f"Route {exc.code().name}: {exc.details()}")
            continue
        took = time.perf_counter() - began
        counted = tally.measuring
        if counted:
            tally.routes += 1
            tally.latencies.append(took)
        if args.expect_routed and decision.outcome != ROUTED:
            tally.error(f"Route outcome {decision.outcome} reason {decision.reason!r}")
        if args.release and decision.reservation_id:
            try:
                await stub.Release(
                    routing_pb2.ReleaseRequest(reservation_id=decision.reservation_id)
                )
            except grpc.aio.AioRpcError as exc:
                tally.error(f"Release {exc.code().name}: {exc.details()}")
            else:
                tally.releases += counted


async def run(args: argparse.Namespace) -> None:
    channels = [grpc.aio.insecure_channel(args.target) for _ in range(args.channels)]
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), 10.0)
    stubs: list[Any] = [routing_pb2_grpc.RoutingServiceStub(c) for c in channels]
    # As the servers do: a full collection walking this process's start-up heap would
    # stall every caller at once and land in the measured latencies.
    prepare_heap_for_serving()
    tally, stop = Tally(), asyncio.Event()
    tasks = [
        asyncio.create_task(caller(stubs[i % len(stubs)], i, args, tally, stop))
        for i in range(args.callers)
    ]
    me = psutil.Process()
    await asyncio.sleep(args.warmup)  # the load runs; this process only waits meanwhile
    cpu0, began = me.cpu_times(), time.perf_counter()
    tally.measuring = True
    emit(event="measuring")
    await asyncio.sleep(args.seconds)
    tally.measuring = False
    elapsed, cpu1 = time.perf_counter() - began, me.cpu_times()
    emit(event="measured")
    stop.set()
    await asyncio.gather(*tasks)
    for channel in channels:
        await channel.close()
    emit(
        event="result",
        routes=tally.routes,
        releases=tally.releases,
        seconds=elapsed,
        errors=sum(tally.errors.values()),
        error_samples=[f"{n} x {what}" for what, n in tally.errors.most_common(5)],
        p50_ms=percentile(tally.latencies, 0.50) * 1000,
        p99_ms=percentile(tally.latencies, 0.99) * 1000,
        cpu_s=(cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
    )


def offered_rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite rate >= 0, got {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.route_load")
    parser.add_argument("--target", required=True)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--expect-routed", action="store_true")
    parser.add_argument("--event-loop", choices=event_loop.CHOICES, default="auto")
    parser.add_argument("--no-release", dest="release", action="store_false")
    parser.add_argument(
        "--rate", type=offered_rate, default=0.0, help="offered Routes/s in all (0: unpaced)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    event_loop.run(run(args), args.event_loop)


if __name__ == "__main__":
    main()
