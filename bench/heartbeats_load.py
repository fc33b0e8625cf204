"""Helpers of ``bench.heartbeats``: the load generator and the bare baseline server.

    python -m bench.heartbeats_load generate --target HOST:PORT --streams N --first K \
        --interval S --seconds S
    python -m bench.heartbeats_load bare

``generate`` holds N ``AgentService.Connect`` streams (clusters ``bench-K`` .. ``bench-K+N-1``)
over raw generated stubs, 100 streams per channel: the regional agent itself would cost more
CPU per report than the server we measure. Protocol on stdin/stdout, one JSON object a line:
after every stream has announced and had its ack it prints ``{"ready": held}``; on a line
``go`` it reports for ``--seconds`` (each stream at its own random phase), stops sending, waits
up to ``--drain-timeout`` for the acks still in flight, prints the tally, then hangs up.

``bare`` is the baseline: a grpc.aio server whose Connect answers every AgentReport with an
Ack of its seq and nothing else. It prints ``{"address": ...}`` and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from dispatcher.server import GRPC_OPTIONS
from dispatcher.v1 import agent_pb2, agent_pb2_grpc, common_pb2

STREAMS_PER_CHANNEL = 100
SETUP_CONCURRENCY = 200
# Distinct channels must not share one TCP connection (gRPC pools subchannels by target).
CHANNEL_OPTIONS = (("grpc.use_local_subchannel_pool", 1),)
Call = grpc.aio.StreamStreamCall[agent_pb2.AgentReport, agent_pb2.Directive]


def raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: each channel and accepted socket is an fd."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


# -- the baseline server ----------------------------------------------------------------------


class BareAgentServicer(agent_pb2_grpc.AgentServiceServicer):
    """Echo-ack: the least any Connect handler must do per report."""

    async def Connect(  # type: ignore[override]
        self, request_iterator: AsyncIterator[agent_pb2.AgentReport], context: Any
    ) -> AsyncIterator[agent_pb2.Directive]:
        async for report in request_iterator:
            yield agent_pb2.Directive(ack=agent_pb2.Ack(seq=report.seq))


async def serve_bare() -> None:
    raise_fd_limit()
    server = grpc.aio.server(options=GRPC_OPTIONS)  # same options as the dispatcher
    agent_pb2_grpc.add_AgentServiceServicer_to_server(BareAgentServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    emit({"address": f"127.0.0.1:{port}"})
    await stop.wait()
    await server.stop(0)


# -- the generator ----------------------------------------------------------------------------


@dataclass
class Tally:
    sent: int = 0
    acked: int = 0
    rejected: int = 0
    held: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    rejections: Counter[str] = field(default_factory=Counter)


def announcement(cluster_id: str, boot_id: str) -> agent_pb2.AgentReport:
    """What a regional agent says first: who it is, and its load (as tests/agent does)."""
    report = agent_pb2.AgentReport(
        seq=1,
        cluster_id=cluster_id,
        boot_id=boot_id,
        admin_state=common_pb2.ADMIN_STATE_READY,
        announce=agent_pb2.ClusterAnnouncement(
            region="bench",
            endpoint=f"{cluster_id}.bench:443",
            slots=16,
            cores=8,
            lanes=[common_pb2.LaneCapacity(lane=common_pb2.TASK_CLASS_HEAVY, slots=4)],
            agent_versions=["auditor@16.4"],
        ),
    )
    report.load.CopyFrom(agent_pb2.LoadReport(cpu_utilization=0.1, in_flight=0))
    return report


class Stream:
    """One agent's Connect call: announce, then timed reports; acks matched by seq."""

    def __init__(self, stub: agent_pb2_grpc.AgentServiceStub, cluster_id: str, tally: Tally):
        self.call: Call = stub.Connect()
        self.cluster_id = cluster_id
        self.boot_id = f"boot-{random.getrandbits(64):016x}"
        self.tally = tally
        self.seq = 1
        self.started = 0
        self.pending: dict[int, float] = {}  # seq -> loop time it was written
        self.idle = asyncio.Event()
        self.closed = False
        self.reader: asyncio.Task[None] | None = None

    async def announce(self) -> bool:
        try:
            await self.call.write(announcement(self.cluster_id, self.boot_id))
            first = await self.call.read()
        except grpc.aio.AioRpcError as exc:
            self.tally.errors[f"announce:{exc.code().name}"] += 1
            return False
        if not isinstance(first, agent_pb2.Directive) or first.ack.rejected_reason:
            self.tally.errors["announce:rejected"] += 1
            return False
        self.reader = asyncio.create_task(self._read())
        return True

    async def _read(self) -> None:
        # read() in a loop, not `async for`: grpc.aio refuses mixing the two styles.
        loop = asyncio.get_running_loop()
        try:
            while (item := await self.call.read()) is not grpc.aio.EOF:
                assert isinstance(item, agent_pb2.Directive)
                if item.WhichOneof("kind") == "ack":
                    self._on_ack(item.ack, loop.time())
        except grpc.aio.AioRpcError as exc:
            self.tally.errors[exc.code().name] += 1
        finally:
            self.closed = True
            self.idle.set()

    def _on_ack(self, ack: agent_pb2.Ack, now: float) -> None:
        sent_at = self.pending.pop(ack.seq, None)
        if sent_at is None:
            return
        self.tally.acked += 1
        self.tally.latencies_ms.append(round((now - sent_at) * 1000, 2))
        if ack.rejected_reason:
            self.tally.rejected += 1
            self.tally.rejections[ack.rejected_reason.partition(":")[0]] += 1
        if not self.pending:
            self.idle.set()

    def _report(self) -> agent_pb2.AgentReport:
        self.seq += 1
        self.started += 3  # cumulative counters must never go backwards
        load = agent_pb2.LoadReport(
            cpu_utilization=random.random(),
            mem_utilization=0.4,
            application_utilization=0.5,
            rps_fractional=0.6,
            in_flight=8,
            queue_depth=0,
            lanes=[agent_pb2.LaneLoad(lane=common_pb2.TASK_CLASS_HEAVY, in_flight=2)],
        )
        counters = agent_pb2.VersionCounters(
            agent_version="auditor@16.4", started=self.started, succeeded=self.started // 2
        )
        return agent_pb2.AgentReport(
            seq=self.seq,
            cluster_id=self.cluster_id,
            boot_id=self.boot_id,
            load=load,
            versions=[counters],
        )

    async def report_until(self, first_at: float, end: float, interval: float) -> None:
        loop = asyncio.get_running_loop()
        next_at = first_at
        while next_at < end and not self.closed:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            report = self._report()
            self.pending[report.seq] = loop.time()
            self.idle.clear()
            try:
                await self.call.write(report)
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
                self.pending.pop(report.seq, None)
                return  # the reader counts why the stream ended
            self.tally.sent += 1
            next_at += interval

    async def hang_up(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError):
            await self.call.done_writing()
        if self.reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.reader, 5.0)


async def open_streams(target: str, streams: int, first: int, tally: Tally) -> list[Stream]:
    channels = [
        grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        for _ in range((streams + STREAMS_PER_CHANNEL - 1) // STREAMS_PER_CHANNEL)
    ]
    stubs = [agent_pb2_grpc.AgentServiceStub(channel) for channel in channels]
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)  # no thundering herd of 10k announces

    async def one(i: int) -> Stream | None:
        async with gate:
            stream = Stream(stubs[i // STREAMS_PER_CHANNEL], f"bench-{first + i}", tally)
            return stream if await stream.announce() else None

    opened = await asyncio.gather(*(one(i) for i in range(streams)))
    return [s for s in opened if s is not None]


async def generate(args: argparse.Namespace) -> None:
    raise_fd_limit()
    tally = Tally()
    streams = await open_streams(args.target, args.streams, args.first, tally)
    emit({"ready": len(streams), "errors": dict(tally.errors)})
    loop = asyncio.get_running_loop()
    if (await loop.run_in_executor(None, sys.stdin.readline)).strip() != "go":
        return
    start = loop.time()
    end = start + args.seconds
    rng = random.Random(args.first)
    await asyncio.gather(
        *(
            s.report_until(start + rng.uniform(0, args.interval), end, args.interval)
            for s in streams
        )
    )
    # Stop sending first, then give the acks in flight a bounded time: deterministic counts.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(s.idle.wait() for s in streams)), args.drain_timeout
        )
    tally.held = sum(not s.closed for s in streams)
    emit(
        {
            "sent": tally.sent,
            "acked": tally.acked,
            "rejected": tally.rejected,
            "held": tally.held,
            "errors": dict(tally.errors),
            "rejections": dict(tally.rejections),
            "latencies_ms": tally.latencies_ms,
        }
    )
    await asyncio.gather(*(s.hang_up() for s in streams))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.heartbeats_load")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate")
    gen.add_argument("--target", required=True)
    gen.add_argument("--streams", type=int, required=True)
    gen.add_argument("--first", type=int, default=0, help="number of the first cluster id")
    gen.add_argument("--interval", type=float, default=5.0)
    gen.add_argument("--seconds", type=float, default=10.0)
    gen.add_argument("--drain-timeout", type=float, default=10.0)
    commands.add_parser("bare")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    asyncio.run(generate(args) if args.command == "generate" else serve_bare())
    return 0


if __name__ == "__main__":
    sys.exit(main())
