"""Route over gRPC with the Redis ledger, against an empty grpc.aio handler (DESIGN §10).

    python -m bench.route [--seconds 5] [--callers 128] [--channels 4] [--clusters 4]
        [--rounds 2] [--redis-url redis://127.0.0.1:6379/14] [--flush-redis]
        [--consumer external|embedded]
        [--event-loop auto|uvloop|asyncio] [--pin auto|off]
        [--json] [--check] [--profile py-spy|cprofile --profile-out FILE]

One invocation starts these processes on this machine:

- the dispatcher (``python -m dispatcher serve`` on Redis database 14, which this bench
  flushes and owns: ``bench.bench_db`` refuses a database that holds other data, unless
  ``--flush-redis``; and a SQLite durable ledger in a temp dir unless ``--database-url``),
  with ``--clusters`` clusters registered through ``AgentService.Connect`` streams this
  process holds open and heartbeats on (one quota family, two pools, so spillover candidates
  batch into one script call);
- with ``--consumer external`` (the default, and the production shape: ``durable.consumer:
  external``), ``dispatcher journal`` copying the journal into SQL beside it, whose CPU is
  reported apart as ``journal_cpu_us_per_route``;
- ``bench.route_empty``: the same RoutingService with handlers that return empty messages;
- ``bench.route_empty --floor-redis-url``: the floor, whose handlers make one pipelined
  script call (``return 1``) on the same Redis first: what a Route costs above it is the
  dispatcher's own work, not the hot-store round trip every Route makes.

With ``--pin auto`` (the default) on a machine with two or more CPUs, each server under test
runs on a CPU of its own and everything else this bench starts (load generators, the
journal process) shares the rest; Redis, started elsewhere, stays where the OS puts it.
A server's CPU per call is then its own work rather than that plus the cost of being
preempted thousands of times a second by the load generator and the journal process
(measured on 2 CPUs: 310-324 against 421-428 us per Route alone, while the floor's 190-208
barely moved). ``--pin off`` lets every process share every CPU.

Then, ``--rounds`` times and alternating so machine noise hits all alike, a load generator
process (``bench.route_load``) drives each with ``--callers`` concurrent callers on
``--channels`` channels: Route, then Release of the reservation, so pools never fill. Server
CPU is read with psutil over the generator's timed window; ``*_busy`` is that CPU over the
window, the share of its one CPU each server used. A rate ratio compares capacities only
while both servers are saturated, and the dispatcher's Redis round trip is latency its
callers must cover: measured on 2 CPUs in one hour, 64 callers left it 7-8 % idle (busy 0.92-0.93,
rate ratio 0.53) while the empty handler was at 0.99; 128 (the default) and 256 saturate
both (0.96-0.99; rate ratio 0.58-0.59 at 128, 0.58 at 256). A light phase then gives the
p99 below saturation: ``--p99-callers`` callers at Poisson arrivals offering
``--light-load`` (default half) of the route rate just measured, to all three. A last
set of phases drives each server with Route alone (no Release: what the target's "per
Route" names; the dispatcher last, because its reservations stay held until their leases
lapse).
``engine_per_s`` is the in-process engine with 100 clusters (``bench.engine_speed.measure``).

Printed: ``route_per_s``, ``empty_per_s``, ``route_over_empty`` (target >= 0.6) and
``route_over_empty_rounds`` (each round's ratio: the spread is the machine's noise),
``route_p99_ms`` (light load; target <= 5) with ``route_p50_ms``, the empty server's
``empty_p99_ms`` and ``empty_p50_ms`` and the floor's ``floor_p99_ms`` and ``floor_p50_ms``
at the same ``light_offered_per_s``,
``route_p99_ms_saturated``, ``route_busy``, ``empty_busy`` and ``floor_busy``,
``server_cpu_us_per_route`` (includes the Release after each Route),
``empty_cpu_us_per_call`` (Route + Release likewise), ``server_cpu_us_per_route_alone``
(target <= 300) beside ``empty_cpu_us_per_route_alone``, the floor's ``floor_per_s``,
``route_over_floor``, ``floor_cpu_us_per_call`` and ``floor_cpu_us_per_route_alone``,
``engine_per_s`` (target >= 50,000),
and ``errors``. Beside them, each process's CPU per routed pair (``journal_``, ``redis_``
from Redis's INFO cpu, ``generator_``) and their sum ``total_cpu_us_per_route`` against the
empty run's ``empty_total_cpu_us_per_call``: where the processes share the cores that bound
the rate, ``empty_total_over_route_total`` is the rate ratio the machine allows. ``--check``
exits 1 on errors only, never on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
import psutil
import redis

from bench import bench_db
from bench.engine_speed import measure as engine_measure
from bench.output import emit
from dispatcher import event_loop
from dispatcher.v1 import agent_pb2, agent_pb2_grpc, common_pb2, routing_pb2, routing_pb2_grpc

START_TIMEOUT_S = 30.0
HEARTBEAT_S = 5.0
POOLS = ("bench/pool-a", "bench/pool-b")
CONFIG = f"""\
routing:
  heartbeat_interval: {HEARTBEAT_S}s
pools:
  - {{id: {POOLS[0]}, family: bench, tpm: 1000000000000, rpm: 1000000000, safety_factor: 1.0}}
  - {{id: {POOLS[1]}, family: bench, tpm: 1000000000000, rpm: 1000000000, safety_factor: 1.0}}
routes:
  chat-default:
    backends:
      - {{name: gpt-4o, weight: 100}}
"""


@dataclass
class Server:
    """A server process, its address, and the stderr lines it wrote (drained in a thread)."""

    proc: subprocess.Popen[str]
    address: str
    lines: list[str] = field(default_factory=list)

    def cpu_s(self) -> float:
        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)


@dataclass(frozen=True)
class Pinning:
    """CPUs for the servers under test and for everything else this bench starts."""

    servers: frozenset[int]
    others: frozenset[int]


def pinning(choice: str) -> Pinning | None:
    """``--pin auto``: the first CPU this process may use for the servers, the rest for the
    others; None when off, or with one CPU (or no affinity calls: not Linux)."""
    if choice == "off" or not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return Pinning(frozenset(cpus[:1]), frozenset(cpus[1:]))


def pin(pid: int, cpus: frozenset[int] | None) -> None:
    """Move every thread of ``pid`` to ``cpus``; threads it starts later inherit them."""
    if cpus is None:
        return
    for thread in psutil.Process(pid).threads():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(thread.id, cpus)


def drain(stream: IO[str] | None, into: list[str]) -> None:
    """Keep reading a child's pipe so it never blocks on a full one."""
    if stream is None:
        return

    def loop() -> None:
        for line in stream:
            into.append(line)
            del into[:-200]

    threading.Thread(target=loop, daemon=True).start()


def read_json_line(stream: IO[str], want: str, seen: list[str]) -> dict[str, Any]:
    """Read ``stream`` until a JSON line with key ``want`` (or ``event == want``)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and (want in data or data.get("event") == want):
            return data
    raise RuntimeError(f"no {want!r} line; output: {''.join(seen[-20:])}")


@contextmanager
def dispatcher_process(args: argparse.Namespace, workdir: Path) -> Iterator[Server]:
    config = workdir / "dispatcher.yaml"
    config.write_text(f"durable:\n  consumer: {args.consumer}\n{CONFIG}")
    prefix = [sys.executable]
    if args.profile == "cprofile":
        prefix += ["-m", "cProfile", "-o", str(args.profile_out)]
    cmd = [
        *prefix,
        *("-m", "dispatcher", "serve", "--listen", "127.0.0.1:0", "--log-format", "json"),
        *("--config", str(config), "--redis-url", args.redis_url),
        *("--database-url", database_url(args, workdir)),
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=loop_env(args))
    with stopping(proc):
        pin(proc.pid, args.server_cpus)  # before it starts any thread: they all inherit
        assert proc.stderr is not None
        seen: list[str] = []
        address = str(read_json_line(proc.stderr, "serving", seen)["address"])
        pin(proc.pid, args.server_cpus)  # and any a race let start before
        server = Server(proc, address, seen)
        drain(proc.stderr, server.lines)
        yield server


@contextmanager
def journal_process(args: argparse.Namespace, workdir: Path) -> Iterator[Server | None]:
    """``dispatcher journal`` beside the server when the consumer is external (the
    production shape: history's SQL work never shares the Route process's core)."""
    if args.consumer != "external":
        yield None
        return
    cmd = [
        *(sys.executable, "-m", "dispatcher", "journal", "--log-format", "json"),
        *("--config", str(workdir / "dispatcher.yaml"), "--redis-url", args.redis_url),
        *("--database-url", database_url(args, workdir)),
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=loop_env(args))
    with stopping(proc):
        assert proc.stderr is not None
        seen: list[str] = []
        read_json_line(proc.stderr, "journal consumer started", seen)
        server = Server(proc, "", seen)
        drain(proc.stderr, server.lines)
        yield server


def loop_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment that puts a dispatcher process on ``--event-loop``."""
    return {**os.environ, "DISPATCHER_EVENT_LOOP": args.event_loop}


def database_url(args: argparse.Namespace, workdir: Path) -> str:
    return str(args.database_url or f"sqlite+aiosqlite:///{workdir / 'ledger.sqlite3'}")


@contextmanager
def empty_process(args: argparse.Namespace, *, floor: bool = False) -> Iterator[Server]:
    """The empty baseline, or with ``floor`` the one-Redis-call floor (``bench.route_empty``)."""
    cmd = [sys.executable, "-m", "bench.route_empty", "--listen", "127.0.0.1:0"]
    cmd += ["--event-loop", args.event_loop]
    cmd += ["--floor-redis-url", args.redis_url] if floor else []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with stopping(proc):
        pin(proc.pid, args.server_cpus)
        assert proc.stdout is not None
        seen: list[str] = []
        port = read_json_line(proc.stdout, "port", seen)["port"]
        pin(proc.pid, args.server_cpus)
        server = Server(proc, f"127.0.0.1:{port}", seen)
        drain(proc.stderr, server.lines)
        yield server


@contextmanager
def stopping(proc: subprocess.Popen[str]) -> Iterator[None]:
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


# -- clusters: Connect streams this process holds open ------------------------------------


def report(cluster: int, seq: int, boot_id: str) -> agent_pb2.AgentReport:
    return agent_pb2.AgentReport(
        seq=seq,
        cluster_id=f"bench-{cluster}",
        boot_id=boot_id,
        announce=agent_pb2.ClusterAnnouncement(
            region="local",
            endpoint=f"bench-{cluster}.example:443",
            slots=64,
            pool_ids=[POOLS[cluster % len(POOLS)]],
        )
        if seq == 1
        else None,
        load=agent_pb2.LoadReport(in_flight=0),
    )


async def agent(address: str, cluster: int, stop: asyncio.Event, errors: list[str]) -> None:
    """One cluster's agent: announce, then a heartbeat every HEARTBEAT_S until ``stop``."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub: Any = agent_pb2_grpc.AgentServiceStub(channel)
        stream = stub.Connect()
        boot_id, seq = f"boot-{cluster}-{time.time_ns()}", 0
        while not stop.is_set():
            seq += 1
            await stream.write(report(cluster, seq, boot_id))
            while True:
                directive = await stream.read()
                if directive is grpc.aio.EOF:
                    errors.append(f"cluster {cluster}: the dispatcher ended its stream")
                    return
                if directive.WhichOneof("kind") == "ack" and directive.ack.seq == seq:
                    if directive.ack.rejected_reason:
                        errors.append(f"cluster {cluster}: {directive.ack.rejected_reason}")
                    break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), HEARTBEAT_S)
        await stream.done_writing()


@asynccontextmanager
async def clusters(address: str, count: int, errors: list[str]) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(agent(address, i, stop, errors)) for i in range(count)]
    try:
        await routable(address)
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


async def routable(address: str) -> None:
    """Poll until the dispatcher's refresh loop has seen the clusters (a Route succeeds)."""
    request = routing_pb2.RouteRequest(
        request_id="",
        route="chat-default",
        agent="auditor",
        estimate=common_pb2.TokenEstimate(input_tokens=1, max_output_tokens=1),
    )
    async with grpc.aio.insecure_channel(address) as channel:
        stub: Any = routing_pb2_grpc.RoutingServiceStub(channel)
        async with asyncio.timeout(START_TIMEOUT_S):
            for attempt in range(10**9):
                request.request_id = f"probe-{attempt}"
                try:
                    decision = await stub.Route(request)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                else:
                    await stub.Release(
                        routing_pb2.ReleaseRequest(reservation_id=decision.reservation_id)
                    )
                    return
                await asyncio.sleep(0.05)


# -- load phases --------------------------------------------------------------------------


@dataclass
class Phase:
    routes: int = 0
    releases: int = 0
    seconds: float = 0.0
    server_cpu_s: float = 0.0
    journal_cpu_s: float = 0.0
    redis_cpu_s: float = 0.0
    generator_cpu_s: float = 0.0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)  # calls per second, one per drive

    @property
    def per_s(self) -> float:
        return self.routes / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_call(self) -> float:
        return self.per_call(self.server_cpu_s)

    @property
    def busy(self) -> float:
        """The share of its CPU the server used over the timed windows (1.0: saturated)."""
        return round(self.server_cpu_s / self.seconds, 3) if self.seconds else 0.0

    def per_call(self, cpu_s: float) -> float:
        return round(cpu_s / self.routes * 1e6, 1) if self.routes else 0.0

    @property
    def total_cpu_s(self) -> float:
        """Every process's share of the machine: on a small box they all compete."""
        return self.server_cpu_s + self.journal_cpu_s + self.redis_cpu_s + self.generator_cpu_s


def redis_cpu_s(client: redis.Redis | None) -> float:
    """Redis's own CPU seconds so far (INFO cpu), or 0 without a client."""
    if client is None:
        return 0.0
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def drive(
    server: Server,
    args: argparse.Namespace,
    phase: Phase,
    callers: int,
    label: str,
    routed: bool,
    journal: Server | None = None,
    hot_store: redis.Redis | None = None,
    release: bool = True,
    rate: float = 0.0,
) -> None:
    """One generator process against ``server``; adds its window's numbers to ``phase``."""
    cmd = [
        *(sys.executable, "-m", "bench.route_load", "--target", server.address),
        *("--callers", str(callers), "--channels", str(args.channels)),
        *("--seconds", str(args.seconds), "--warmup", str(args.warmup), "--prefix", label),
        *("--event-loop", args.event_loop),
    ]
    if routed:
        cmd.append("--expect-routed")
    if not release:
        cmd.append("--no-release")
    if rate:
        cmd += ["--rate", str(rate)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    cpu0 = journal0 = redis0 = 0.0
    result: dict[str, Any] = {}
    async for raw in proc.stdout:
        line = json.loads(raw)
        if line["event"] == "measuring":
            cpu0, redis0 = server.cpu_s(), redis_cpu_s(hot_store)
            journal0 = journal.cpu_s() if journal else 0.0
        elif line["event"] == "measured":
            phase.server_cpu_s += server.cpu_s() - cpu0
            phase.redis_cpu_s += redis_cpu_s(hot_store) - redis0
            phase.journal_cpu_s += journal.cpu_s() - journal0 if journal else 0.0
        elif line["event"] == "result":
            result = line
    if await proc.wait() != 0 or not result:
        phase.errors += 1
        phase.error_samples.append(f"generator {label} exited {proc.returncode}")
        phase.rates.append(0.0)  # keeps rounds aligned with the baseline's
        return
    phase.routes += result["routes"]
    phase.releases += result["releases"]
    if release and result["releases"] != result["routes"]:
        # Both servers must take the same calls per routed pair, or the ratio compares
        # unlike work (an empty decision once made the generator skip the baseline's Release).
        phase.errors += 1
        phase.error_samples.append(
            f"generator {label}: {result['routes']} routes but {result['releases']} releases"
        )
    phase.seconds += result["seconds"]
    phase.generator_cpu_s += result["cpu_s"]
    phase.errors += result["errors"]
    phase.error_samples += result["error_samples"]
    phase.p99_ms.append(result["p99_ms"])
    phase.p50_ms.append(result["p50_ms"])
    phase.rates.append(result["routes"] / result["seconds"] if result["seconds"] else 0.0)


@contextmanager
def profiling(args: argparse.Namespace, pid: int) -> Iterator[None]:
    if args.profile != "py-spy":
        yield
        return
    cmd = [
        *("py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "200"),
        *("--output", str(args.profile_out), "--nonblocking"),
    ]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    hot_store = redis.Redis.from_url(args.redis_url)
    bench_db.claim(hot_store, args.redis_url, force=args.flush_redis)
    errors: list[str] = []
    route, empty, light = Phase(), Phase(), Phase()
    route_alone, empty_alone, empty_light = Phase(), Phase(), Phase()
    floor, floor_alone, floor_light = Phase(), Phase(), Phase()
    pins = pinning(args.pin)
    args.server_cpus = pins.servers if pins else None  # read where servers start
    if pins is not None:
        os.sched_setaffinity(0, pins.others)  # this process, and all it starts, inherit
    with (
        tempfile.TemporaryDirectory(prefix="bench-route-") as tmp,
        dispatcher_process(args, Path(tmp)) as dispatcher,
        journal_process(args, Path(tmp)) as journal,
        empty_process(args) as baseline,
        empty_process(args, floor=True) as floor_server,
    ):
        async with clusters(dispatcher.address, args.clusters, errors):
            for r in range(args.rounds):
                await drive(baseline, args, empty, args.callers, f"empty-{r}", routed=False)
                await drive(floor_server, args, floor, args.callers, f"floor-{r}", False)
                with profiling(args, dispatcher.proc.pid):
                    label = f"route-{r}"
                    await drive(
                        dispatcher, args, route, args.callers, label, True, journal, hot_store
                    )
            # Below saturation (DESIGN §10's p99), beside the empty server at the same rate:
            # the client's and gRPC's share of a latency is the same for both.
            light_rate = args.light_load * route.per_s
            light_callers = args.p99_callers
            await drive(
                baseline, args, empty_light, light_callers, "empty-light", False, rate=light_rate
            )
            await drive(dispatcher, args, light, light_callers, "light", True, rate=light_rate)
            await drive(
                floor_server,
                args,
                floor_light,
                light_callers,
                "floor-light",
                False,
                rate=light_rate,
            )
            await drive(
                baseline, args, empty_alone, args.callers, "empty-alone", False, release=False
            )
            await drive(
                floor_server, args, floor_alone, args.callers, "floor-alone", False, release=False
            )
            await drive(dispatcher, args, route_alone, args.callers, "alone", True, release=False)
        processes = [(dispatcher, "dispatcher"), (baseline, "empty"), (floor_server, "floor")]
        processes += [(journal, "journal")] if journal else []
        for server, name in processes:
            if server.proc.poll() is not None:
                errors.append(f"{name} server exited early ({server.proc.returncode})")
    phases = {
        "route": route, "empty": empty, "light": light, "empty light": empty_light,
        "route alone": route_alone, "empty alone": empty_alone, "floor": floor,
        "floor alone": floor_alone, "floor light": floor_light,
    }  # fmt: skip
    for name, phase in phases.items():
        errors += [f"{name}: {sample}" for sample in phase.error_samples]
    engine = engine_measure(100, args.engine_seconds)
    return {
        "route_per_s": round(route.per_s, 1),
        "empty_per_s": round(empty.per_s, 1),
        "route_over_empty": round(route.per_s / empty.per_s, 3) if empty.per_s else 0.0,
        "route_over_empty_rounds": ratios_by_round(route, empty),
        # On a machine this small the rates follow the whole machine's CPU per call:
        "empty_total_over_route_total": round(
            empty.total_cpu_s / empty.routes / (route.total_cpu_s / route.routes), 3
        )
        if route.routes and empty.routes and route.total_cpu_s
        else 0.0,
        "route_p99_ms": round(max(light.p99_ms, default=0.0), 3),
        "route_p50_ms": round(max(light.p50_ms, default=0.0), 3),
        "empty_p99_ms": round(max(empty_light.p99_ms, default=0.0), 3),
        "empty_p50_ms": round(max(empty_light.p50_ms, default=0.0), 3),
        "floor_p99_ms": round(max(floor_light.p99_ms, default=0.0), 3),
        "floor_p50_ms": round(max(floor_light.p50_ms, default=0.0), 3),
        "light_offered_per_s": round(light_rate, 1),
        "route_p99_ms_saturated": round(max(route.p99_ms, default=0.0), 3),
        "route_busy": route.busy,
        "empty_busy": empty.busy,
        "floor_busy": floor.busy,
        "server_cpu_us_per_route": round(route.cpu_us_per_call, 1),
        "empty_cpu_us_per_call": round(empty.cpu_us_per_call, 1),
        "server_cpu_us_per_route_alone": round(route_alone.cpu_us_per_call, 1),
        "empty_cpu_us_per_route_alone": round(empty_alone.cpu_us_per_call, 1),
        "route_alone_over_empty": round(route_alone.per_s / empty_alone.per_s, 3)
        if empty_alone.per_s
        else 0.0,
        "floor_per_s": round(floor.per_s, 1),
        "route_over_floor": round(route.per_s / floor.per_s, 3) if floor.per_s else 0.0,
        "floor_cpu_us_per_call": round(floor.cpu_us_per_call, 1),
        "floor_cpu_us_per_route_alone": round(floor_alone.cpu_us_per_call, 1),
        "journal_cpu_us_per_route": route.per_call(route.journal_cpu_s),
        "redis_cpu_us_per_route": route.per_call(route.redis_cpu_s),
        "generator_cpu_us_per_route": route.per_call(route.generator_cpu_s),
        "total_cpu_us_per_route": route.per_call(route.total_cpu_s),
        "empty_total_cpu_us_per_call": empty.per_call(empty.total_cpu_s),
        "engine_per_s": round(engine, 1),
        "routes": route.routes,
        "empty_calls": empty.routes,
        "light_routes": light.routes,
        "light_per_s": round(light.per_s, 1),
        "errors": sum(phase.errors for phase in phases.values()) + len(errors),
        "error_samples": errors[:10],
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "callers": args.callers,
            "channels": args.channels,
            "clusters": args.clusters,
            "p99_callers": args.p99_callers,
            "light_load": args.light_load,
            "consumer": args.consumer,
            "event_loop": args.event_loop,
            "pinned": pins is not None,
            "cpus": psutil.cpu_count(),
            "load_avg_1m": round(psutil.getloadavg()[0], 2),
        },
    }


def ratios_by_round(phase: Phase, baseline: Phase) -> list[float]:
    """Each round's rate over its baseline's in the same round: their spread shows how much
    of a difference between two runs the machine's noise alone could explain."""
    return [
        round(rate / base, 3) if base else 0.0
        for rate, base in zip(phase.rates, baseline.rates, strict=False)
    ]


def load_fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.route")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per phase")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2, help="empty/route phase pairs")
    parser.add_argument("--callers", type=int, default=128)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--clusters", type=int, default=4)
    parser.add_argument("--p99-callers", type=int, default=16)
    parser.add_argument(
        "--light-load",
        type=load_fraction,
        default=0.5,
        help="the p99 phase offers this fraction of the saturated route_per_s",
    )
    parser.add_argument("--engine-seconds", type=float, default=2.0)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    bench_db.add_flush_flag(parser)
    parser.add_argument(
        "--database-url",
        help="durable ledger (default: SQLite in a temp dir, migrated on start; "
        "PostgreSQL needs `dispatcher migrate` first)",
    )
    parser.add_argument(
        "--event-loop",
        choices=event_loop.CHOICES,
        default="auto",
        help="the loop every process here runs on (server.event_loop; auto: uvloop if "
        "installed), to compare the two in one invocation of each",
    )
    parser.add_argument(
        "--consumer",
        choices=("external", "embedded"),
        default="external",
        help="where the journal consumer runs (durable.consumer); external starts "
        "`dispatcher journal` and reports its CPU apart",
    )
    parser.add_argument(
        "--pin",
        choices=("auto", "off"),
        default="auto",
        help="auto: with two or more CPUs, each server under test on a CPU of its own and "
        "everything else this bench starts on the rest; off: all share every CPU",
    )
    parser.add_argument("--profile", choices=("none", "py-spy", "cprofile"), default="none")
    parser.add_argument("--profile-out", type=Path, default=Path("route-profile.txt"))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--check", action="store_true", help="exit 1 on any error")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    emit(result, as_json=args.json)
    return 1 if args.check and result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
