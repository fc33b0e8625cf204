"""Run the demo: start everything, play the script, watch, summarise."""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from dispatcher.demo.clusters import SimCluster
from dispatcher.demo.load import LoadGenerator
from dispatcher.demo.quota_check import QuotaCheck
from dispatcher.demo.scenario import (
    AGENT,
    CLUSTERS,
    LOW_TPM,
    POOL_EAST,
    Timeline,
    demo_config,
)
from dispatcher.server import DispatcherServer
from dispatcher.v1 import admin_pb2, admin_pb2_grpc

SAMPLE_S = 0.1
FAILURE_SHARE = 0.4


@dataclass
class Observed:
    """What the demo saw besides the callers' answers."""

    breaker_trips: int = 0
    check: QuotaCheck = field(default_factory=QuotaCheck)
    quota: list[Any] = field(default_factory=list)
    script: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class Demo:
    server: DispatcherServer
    channel: grpc.aio.Channel
    clusters: dict[str, SimCluster]
    load: LoadGenerator
    observed: Observed = field(default_factory=Observed)
    started: float = field(default_factory=time.monotonic)

    @property
    def admin(self) -> Any:
        return admin_pb2_grpc.AdminServiceStub(self.channel)

    def summary(self) -> dict[str, Any]:
        stats, seen = self.load.stats, self.observed
        errors = stats.errors + seen.errors + [e for c in self.clusters.values() for e in c.errors]
        return {
            "decisions": stats.decisions,
            "outcomes": dict(stats.outcomes),
            "per_cluster": dict(stats.per_cluster),
            "spillovers": stats.spillovers,
            "breaker_trips": seen.breaker_trips,
            "handovers": stats.handovers,
            "refused": stats.refused,
            "over_admission": round(seen.check.ratio(time.time()), 4),
            "errors": len(errors),
            "error_samples": errors[:5],
            "seconds": round(time.monotonic() - self.started, 1),
        }


async def run_demo(duration: float, rate: float, on_tick: Callable[[Demo], None] | None) -> Demo:
    with tempfile.TemporaryDirectory(prefix="dispatcher-demo-") as tmp:
        server = DispatcherServer(demo_config(Path(tmp)))
        await server.start()
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                return await _play(server, channel, duration, rate, on_tick)
        finally:
            await server.stop(grace=0)


async def _play(
    server: DispatcherServer,
    channel: grpc.aio.Channel,
    duration: float,
    rate: float,
    on_tick: Callable[[Demo], None] | None,
) -> Demo:
    rng, observed = random.Random(7), Observed()
    for pool in server.runtime.config.pools:
        observed.check.start(pool.id, time.time(), pool.tpm or 0.0)
    clusters = {p.cluster_id: SimCluster(p, channel, rng, observed.check) for p in CLUSTERS}
    for cluster in clusters.values():
        await cluster.connect()
    await server.runtime.router.refresh()
    load = LoadGenerator(channel, clusters, rate, rng, observed.check)
    demo = Demo(server, channel, clusters, load, observed)
    stop = asyncio.Event()
    background = [
        asyncio.create_task(demo.load.run(stop)),
        asyncio.create_task(_watch_breakers(demo)),
        asyncio.create_task(_sample_quota(demo, stop, on_tick)),
        *(asyncio.create_task(c.heartbeat_forever(stop)) for c in clusters.values()),
    ]
    try:
        await _script(demo, duration)
    finally:
        stop.set()
        background[1].cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for cluster in clusters.values():
            await cluster.aclose()
    return demo


async def _script(demo: Demo, duration: float) -> None:
    """The story, at fractions of ``duration`` (``Timeline``)."""
    t = Timeline()
    east, eu = POOL_EAST, demo.clusters["eu-west"]
    steps: list[tuple[float, str, Callable[[], Awaitable[None]]]] = [
        (t.exhaust_at, f"{east} lowered to {LOW_TPM} tpm", lambda: _set_tpm(demo, east, LOW_TPM)),
        (t.fail_at, f"{AGENT} starts failing", lambda: _fail(demo, FAILURE_SHARE)),
        (t.restore_at, f"{east} restored", lambda: _set_tpm(demo, east, 3_000_000)),
        (t.recover_at, f"{AGENT} fixed", lambda: _fail(demo, 0.0)),
        (t.restart_at, "eu-west restarts", eu.restart),
    ]
    for at, label, action in sorted(steps, key=lambda step: step[0]):
        await _until(demo, at * duration)
        demo.observed.script.append(label)
        await action()
    await _until(demo, duration)


async def _until(demo: Demo, second: float) -> None:
    delay = demo.started + second - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)  # the script's clock: the story is told in real time


async def _set_tpm(demo: Demo, pool_id: str, tpm: float) -> None:
    request = admin_pb2.SetLimitsRequest(pool_id=pool_id, limits={"tpm": tpm})
    reply = await demo.admin.SetLimits(request, timeout=5.0)
    room = next(d.remaining for d in reply.dimensions if d.name == "tpm")
    demo.observed.check.limit_changed(pool_id, time.time(), room, tpm)


async def _fail(demo: Demo, share: float) -> None:
    for cluster in demo.clusters.values():
        cluster.failing = {AGENT: share} if share else {}


async def _watch_breakers(demo: Demo) -> None:
    """Count trips from the dispatcher's own Watch stream."""
    request = admin_pb2.WatchRequest(types=[admin_pb2.EVENT_TYPE_BREAKER])
    with contextlib.suppress(asyncio.CancelledError):
        async for event in demo.admin.Watch(request):
            if event.attributes.get("to") == "open":
                demo.observed.breaker_trips += 1
                demo.load.stats.note(f"breaker: {event.summary}")


async def _sample_quota(
    demo: Demo, stop: asyncio.Event, on_tick: Callable[[Demo], None] | None
) -> None:
    """The pools as the Admin API shows them, for the live view, and its refresh."""
    while not stop.is_set():
        try:
            reply = await demo.admin.GetQuota(admin_pb2.GetQuotaRequest(), timeout=5.0)
        except grpc.aio.AioRpcError as exc:
            demo.observed.errors.append(f"quota: {exc.code().name}")
        else:
            demo.observed.quota = list(reply.pools)
        if on_tick is not None:
            on_tick(demo)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_S)
