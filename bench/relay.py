"""Result relay bench: every published event reaches its awaiter exactly once, resumes included.

Usage::

    python -m bench.relay --tasks 2000 --awaiters 2000 --disconnect-rate 0.2 --json
    python -m bench.relay --tasks 20 --awaiters 20 --disconnect-rate 0.5 --json --check
    python -m bench.relay --backend redis --redis-url redis://127.0.0.1:6379/15 --tasks 500

An in-process grpc.aio server runs the real ``ResultServicer`` over the memory store (or Redis,
under a fresh namespace whose keys expire after ten minutes). Tasks are registered as the Route
path would. Phase 1 publishes each task's first PROGRESS before anyone listens (kept, then
delivered). Phase 2 starts the awaiters (the SDK's ``await_result``; awaiter ``i`` follows task
``i mod tasks``) and waits until each holds its first event. Phase 3 publishes the remaining
PROGRESS events and the FINAL over gRPC, then publishes the FINAL again with its sequence (a
retried Publish, which must come back ``duplicate``). A ``--disconnect-rate`` share of awaiters
hang up after a random number of events and resume with the last event id they saw.

Output: ``published`` (events stored), ``expected`` (events the awaiters should see; equal to
``published`` when every task has one awaiter), ``delivered`` (distinct events seen per
awaiter), ``duplicates``, ``lost``, ``out_of_order``, ``resumed``, ``publish_retries_deduped``,
and ``deliver_p50_ms`` / ``deliver_p99_ms``: from the start of a phase-3 Publish to the event's
arrival at the awaiter. Counts are exact; the latencies are for this machine only. ``--check``
exits 1 unless delivered == expected, duplicates == lost == out_of_order == 0, every retried
Publish was deduplicated, and resumed > 0 when the rate is > 0. ``--timeout`` bounds the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from bench.output import finish
from dispatcher.client import DispatcherClient, RetryPolicy
from dispatcher.relay.memory import MemoryResultStore
from dispatcher.relay.model import RelaySettings, ResultStore
from dispatcher.relay.redis_store import RedisResultStore
from dispatcher.rpc.result_service import ResultServicer
from dispatcher.server import GRPC_OPTIONS
from dispatcher.v1 import result_pb2, result_pb2_grpc

PROGRESS = result_pb2.RESULT_EVENT_KIND_PROGRESS
FINAL = result_pb2.RESULT_EVENT_KIND_FINAL
AWAITERS_PER_CHANNEL = 250
PUBLISH_CONCURRENCY = 256


@dataclass
class Tally:
    """What the awaiters saw, and when each phase-3 publish started."""

    published: int = 0
    retries_deduped: int = 0
    resumed: int = 0
    received: int = 0
    out_of_order: int = 0
    seen: set[tuple[int, str]] = field(default_factory=set)
    sent_at: dict[bytes, float] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    first_event: dict[int, asyncio.Event] = field(
        default_factory=lambda: defaultdict(asyncio.Event)
    )


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


def payload_of(task: int, seq: int) -> bytes:
    return f"{task}:{seq}".encode()


async def open_store(args: argparse.Namespace) -> ResultStore:
    settings = RelaySettings(ttl=600.0)
    if args.backend == "memory":
        return MemoryResultStore(settings)
    namespace = f"bench:relay:{uuid.uuid4().hex[:8]}"
    return await RedisResultStore.open(args.redis_url, settings, namespace, max_connections=128)


async def start_server(store: ResultStore) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server(options=GRPC_OPTIONS)
    servicer = ResultServicer(store, keepalive_interval=5.0)
    result_pb2_grpc.add_ResultServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def publish(
    client: DispatcherClient, tally: Tally, task: int, seq: int, kind: int, timed: bool
) -> None:
    payload = payload_of(task, seq)
    if timed:
        tally.sent_at[payload] = time.perf_counter()
    reply = await client.publish(f"task-{task}", kind, payload, sequence=seq)
    tally.published += not reply.duplicate


async def await_task(
    client: DispatcherClient, tally: Tally, awaiter: int, task: int, token: str, hang_up: int
) -> None:
    """Follow one task; after ``hang_up`` events (0: never) disconnect and resume."""
    last, count = "", 0
    while True:
        stream = client.await_result(f"task-{task}", token, after_event_id=last)
        async with contextlib.aclosing(stream):
            async for event in stream:
                arrived = time.perf_counter()
                record(tally, awaiter, event, last, arrived)
                tally.first_event[awaiter].set()
                last, count = event.event_id, count + 1
                if event.kind == FINAL:
                    return
                if count == hang_up:
                    break
        tally.resumed += 1
        hang_up = 0


def record(
    tally: Tally, awaiter: int, event: result_pb2.ResultEvent, last: str, arrived: float
) -> None:
    tally.received += 1
    tally.seen.add((awaiter, event.event_id))
    if last and _position(event.event_id) <= _position(last):
        tally.out_of_order += 1
    sent = tally.sent_at.get(event.payload)
    if sent is not None:
        tally.latencies_ms.append((arrived - sent) * 1000)


def _position(event_id: str) -> tuple[int, int]:
    ms, _, n = event_id.partition("-")
    return int(ms), int(n)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    store = await open_store(args)
    server, address = await start_server(store)
    tally = Tally()
    started = time.perf_counter()
    channels = max(1, -(-args.awaiters // AWAITERS_PER_CHANNEL))
    # A local subchannel pool per client: separate HTTP/2 connections, as separate callers.
    options = (("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 1 << 24))
    policy = RetryPolicy(max_attempts=8)
    clients = [DispatcherClient(address, retry=policy, options=options) for _ in range(channels)]
    try:
        async with asyncio.timeout(args.timeout):
            await phases(args, store, clients, tally)
        timed_out = False
    except TimeoutError:
        timed_out = True
    finally:
        for client in clients:
            await client.aclose()
        await server.stop(0)
        await store.aclose()
    return report(args, tally, time.perf_counter() - started, timed_out)


async def phases(
    args: argparse.Namespace, store: ResultStore, clients: list[DispatcherClient], tally: Tally
) -> None:
    rng = random.Random(args.seed)
    tokens = [await store.register(f"task-{task}") for task in range(args.tasks)]
    publisher = clients[0]
    gate = asyncio.Semaphore(PUBLISH_CONCURRENCY)

    async def bounded(task: int, seq: int, kind: int, timed: bool) -> None:
        async with gate:
            await publish(publisher, tally, task, seq, kind, timed)

    events = args.progress + 1  # progress events, then the FINAL
    await asyncio.gather(*(bounded(t, 1, PROGRESS, False) for t in range(args.tasks)))
    awaiters = []
    for a in range(args.awaiters):
        task = a % args.tasks
        hang_up = rng.randrange(1, events) if rng.random() < args.disconnect_rate else 0
        client = clients[a % len(clients)]
        awaiters.append(
            asyncio.create_task(await_task(client, tally, a, task, tokens[task], hang_up))
        )
    await asyncio.gather(*(tally.first_event[a].wait() for a in range(args.awaiters)))

    async def the_rest_of(task: int) -> None:
        # In order: a worker publishes its task's events one after another, and a FINAL
        # that overtook a progress event would have the relay refuse that event as late.
        for seq in range(2, events + 1):
            await bounded(task, seq, FINAL if seq == events else PROGRESS, True)

    await asyncio.gather(*(the_rest_of(t) for t in range(args.tasks)))
    await asyncio.gather(*awaiters)
    before = tally.published
    await asyncio.gather(*(bounded(t, events, FINAL, False) for t in range(args.tasks)))
    tally.retries_deduped = args.tasks - (tally.published - before)


def report(args: argparse.Namespace, tally: Tally, wall: float, timed_out: bool) -> dict[str, Any]:
    events = args.progress + 1
    per_task = [
        args.awaiters // args.tasks + (t < args.awaiters % args.tasks) for t in range(args.tasks)
    ]
    expected = events * sum(per_task)
    delivered = len(tally.seen)
    return {
        "setup": {
            "backend": args.backend,
            "tasks": args.tasks,
            "awaiters": args.awaiters,
            "events_per_task": events,
            "disconnect_rate": args.disconnect_rate,
        },
        "published": tally.published,
        "expected": expected,
        "delivered": delivered,
        "duplicates": tally.received - delivered,
        "lost": expected - delivered,
        "out_of_order": tally.out_of_order,
        "resumed": tally.resumed,
        "publish_retries_deduped": tally.retries_deduped,
        "deliver_p50_ms": round(percentile(tally.latencies_ms, 0.50), 2),
        "deliver_p99_ms": round(percentile(tally.latencies_ms, 0.99), 2),
        "events_per_s": round(tally.received / wall, 1) if wall else 0.0,
        "wall_s": round(wall, 2),
        "timed_out": timed_out,
    }


def failures(args: argparse.Namespace, result: dict[str, Any]) -> list[str]:
    problems = [
        f"{name} = {result[name]}"
        for name in ("duplicates", "lost", "out_of_order")
        if result[name] != 0
    ]
    if result["delivered"] != result["expected"]:
        problems.append(f"delivered {result['delivered']} != expected {result['expected']}")
    if result["publish_retries_deduped"] != args.tasks:
        problems.append(f"only {result['publish_retries_deduped']} retried publishes deduplicated")
    if args.disconnect_rate > 0 and result["resumed"] == 0:
        problems.append("no awaiter resumed")
    if result["timed_out"]:
        problems.append(f"did not finish within {args.timeout} s")
    return problems


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.relay", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--awaiters", type=int, default=None, help="default: one per task")
    parser.add_argument("--progress", type=int, default=3, help="PROGRESS events per task")
    parser.add_argument("--disconnect-rate", type=float, default=0.2)
    parser.add_argument("--backend", choices=("memory", "redis"), default="memory")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for the whole run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--check", action="store_true", help="exit 1 when an expectation fails")
    args = parser.parse_args(argv)
    args.awaiters = args.tasks if args.awaiters is None else args.awaiters
    if args.tasks < 1 or args.awaiters < 1 or args.progress < 1:
        parser.error("--tasks, --awaiters and --progress must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    return finish(result, failures(args, result), as_json=args.json, check=args.check)


if __name__ == "__main__":
    sys.exit(main())
