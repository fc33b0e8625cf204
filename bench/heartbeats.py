"""Heartbeat fan-in bench: N agent streams on ONE real dispatcher process, every report acked.

Usage::

    python -m bench.heartbeats --streams 10000 --interval 5 --seconds 60 --json
    python -m bench.heartbeats --streams 50 --interval 1 --seconds 3 --check --json

Starts ``python -m dispatcher serve`` (embedded defaults: memory hot store, a SQLite ledger in
a temporary directory; ``routing.heartbeat_interval`` = ``--interval``, so the registry's
flood rule expects this pace). Load-generator subprocesses (``bench.heartbeats_load``, raw
stubs, 100 streams per channel) open the streams; each announces its own cluster id, then
sends a load report every ``--interval`` at a random phase for ``--seconds``, then stops
sending and waits (``--drain-timeout``) for the acks still in flight. Then the same
generators hold the same streams against a bare grpc.aio echo-ack server for
``--baseline-seconds``: on a shared, noisy machine only the ratio means anything (DESIGN §10).

Output: ``streams_held`` (open at the end), ``reports_sent``, ``reports_acked``,
``reports_rejected`` (acked with a rejected_reason), ``ack_p50_ms`` / ``ack_p99_ms`` (write to
ack, at the generator), ``server_cpu_pct`` (the server process over the reporting window,
100 = one core), ``server_rss_mb``, ``server_cpu_us_per_report`` (server CPU from the start of
the window until the last ack, per acked report), the same as ``baseline_*``, and
``cpu_per_report_vs_bare``. ``--check`` exits 1 unless every stream is held, every report sent
was acked and none was rejected (a report the registry refuses as a flood is acked with a
reason: when the server lags, queued reports of one stream are processed closer together
than half an interval). Generators and server share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.heartbeats_load import raise_fd_limit
from bench.output import finish

STREAMS_PER_GENERATOR = 2500
MAX_GENERATORS = 4
START_TIMEOUT_S = 60.0
# Announcing 10,000 clusters takes a while on two shared cores; the bound is only a hang guard.
SETUP_TIMEOUT_S = 300.0
# A generator's tally is one JSON line holding every ack latency it measured.
LINE_LIMIT = 256 * 2**20


@dataclass
class Server:
    """A server subprocess, its address, and the last lines it logged (for errors)."""

    proc: asyncio.subprocess.Process
    address: str
    log: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    drain: asyncio.Task[None] | None = None

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15.0)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.drain is not None:
            self.drain.cancel()


async def _drain_lines(stream: asyncio.StreamReader, keep: deque[str]) -> None:
    # Keep reading so a chatty server never blocks on a full pipe.
    while line := await stream.readline():
        keep.append(line.decode(errors="replace"))


async def start_dispatcher(tmp: Path, interval: float) -> Server:
    config = tmp / "dispatcher.yaml"
    config.write_text(f"routing:\n  heartbeat_interval: {interval}s\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatcher", "serve", "--listen", "127.0.0.1:0",
        "--log-format", "json", "--config", str(config),
        "--database-url", f"sqlite+aiosqlite:///{tmp / 'l.sqlite3'}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    seen: deque[str] = deque(maxlen=40)
    async with asyncio.timeout(START_TIMEOUT_S):
        while line := (await proc.stderr.readline()).decode(errors="replace"):
            seen.append(line)
            with contextlib.suppress(json.JSONDecodeError):
                if (event := json.loads(line)).get("event") == "serving":
                    server = Server(proc, str(event["address"]), seen)
                    server.drain = asyncio.create_task(_drain_lines(proc.stderr, seen))
                    return server
    raise RuntimeError(f"dispatcher did not report serving: {''.join(seen)}")


async def start_bare() -> Server:
    proc = await _python("-m", "bench.heartbeats_load", "bare")
    assert proc.stdout is not None
    async with asyncio.timeout(START_TIMEOUT_S):
        line = await proc.stdout.readline()
    return Server(proc, str(json.loads(line)["address"]))


async def _python(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        limit=LINE_LIMIT,
    )  # fmt: skip


class Generator:
    """One ``bench.heartbeats_load generate`` subprocess, driven over its stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(
        cls, args: argparse.Namespace, target: str, n: int, first: int, seconds: float
    ) -> Generator:
        proc = await _python(
            "-m", "bench.heartbeats_load", "generate", "--target", target,
            "--streams", str(n), "--first", str(first), "--interval", str(args.interval),
            "--seconds", str(seconds), "--drain-timeout", str(args.drain_timeout),
        )  # fmt: skip
        return cls(proc)

    async def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator {self.proc.pid} exited early")
        result: dict[str, Any] = json.loads(line)
        return result

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")

    async def wait(self) -> None:
        try:
            await asyncio.wait_for(self.proc.wait(), 30.0)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


def split(streams: int, generators: int) -> list[tuple[int, int]]:
    """(first cluster number, count) per generator, as even as possible."""
    base, extra = divmod(streams, generators)
    shares, first = [], 0
    for i in range(generators):
        n = base + (i < extra)
        shares.append((first, n))
        first += n
    return shares


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def measure(args: argparse.Namespace, server: Server, seconds: float) -> dict[str, Any]:
    """Hold ``args.streams`` streams on ``server`` for ``seconds``; counts and server CPU."""
    gens = [
        await Generator.start(args, server.address, n, first, seconds)
        for first, n in split(args.streams, args.generators)
    ]
    try:
        started = time.monotonic()
        async with asyncio.timeout(SETUP_TIMEOUT_S):
            ready = await asyncio.gather(*(g.line() for g in gens))
        setup_s = time.monotonic() - started
        # The registry refuses a report within half an interval of the last one (a flood);
        # the announce counts, so the first timed report may not come sooner than that.
        await asyncio.sleep(args.interval / 2 + 0.1)
        ps = server.ps
        cpu0, t0 = cpu_seconds(ps), time.monotonic()
        for g in gens:
            g.go()
        await asyncio.sleep(seconds)
        cpu1, t1 = cpu_seconds(ps), time.monotonic()
        async with asyncio.timeout(args.drain_timeout + 60):
            tallies = await asyncio.gather(*(g.line() for g in gens))
        cpu2, rss = cpu_seconds(ps), ps.memory_info().rss
    finally:
        await asyncio.gather(*(g.wait() for g in gens))
    return summarise(ready, tallies, setup_s, (cpu1 - cpu0) / (t1 - t0), cpu2 - cpu0, rss)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def summarise(
    ready: Sequence[dict[str, Any]],
    tallies: Sequence[dict[str, Any]],
    setup_s: float,
    cores: float,
    cpu_s: float,
    rss: int,
) -> dict[str, Any]:
    latencies = [x for t in tallies for x in t["latencies_ms"]]
    errors: Counter[str] = Counter()
    rejections: Counter[str] = Counter()
    for t in (*ready, *tallies):
        errors.update(t["errors"])
        rejections.update(t.get("rejections", {}))
    acked = sum(t["acked"] for t in tallies)
    return {
        "streams_announced": sum(r["ready"] for r in ready),
        "streams_held": sum(t["held"] for t in tallies),
        "setup_s": round(setup_s, 2),
        "reports_sent": sum(t["sent"] for t in tallies),
        "reports_acked": acked,
        "reports_rejected": sum(t["rejected"] for t in tallies),
        "rejections": dict(rejections),
        "stream_errors": dict(errors),
        "ack_p50_ms": _round(percentile(latencies, 0.50)),
        "ack_p99_ms": _round(percentile(latencies, 0.99)),
        "server_cpu_pct": round(cores * 100, 1),
        "server_rss_mb": round(rss / 2**20, 1),
        "server_cpu_us_per_report": _round(cpu_s / acked * 1e6 if acked else None),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit()
    result: dict[str, Any] = {
        "streams": args.streams,
        "interval_s": args.interval,
        "seconds": args.seconds,
        "generators": args.generators,
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-heartbeats-") as tmp:
        server = await start_dispatcher(Path(tmp), args.interval)
        try:
            result.update(await measure(args, server, args.seconds))
        finally:
            await server.stop()
    if args.baseline_seconds > 0:
        bare = await start_bare()
        try:
            baseline = await measure(args, bare, args.baseline_seconds)
        finally:
            await bare.stop()
        result.update({f"baseline_{k.removeprefix('server_')}": v for k, v in baseline.items()})
        ours, theirs = result["server_cpu_us_per_report"], result["baseline_cpu_us_per_report"]
        result["cpu_per_report_vs_bare"] = round(ours / theirs, 2) if ours and theirs else None
    return result


def failures(args: argparse.Namespace, result: dict[str, Any]) -> list[str]:
    problems = []
    if result["streams_held"] != args.streams:
        problems.append(f"streams_held {result['streams_held']} != streams {args.streams}")
    if result["reports_acked"] != result["reports_sent"]:
        problems.append(f"reports_acked {result['reports_acked']} != {result['reports_sent']}")
    if result["reports_sent"] == 0:
        problems.append("no report was sent")
    if result["reports_rejected"]:
        problems.append(f"{result['reports_rejected']} reports rejected: {result['rejections']}")
    return problems


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.heartbeats", description=__doc__)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between reports")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window")
    parser.add_argument(
        "--baseline-seconds",
        type=float,
        default=None,
        help="window against the bare server (default min(seconds, 15); 0: skip)",
    )
    parser.add_argument("--generators", type=int, default=0, help="processes (0: auto)")
    parser.add_argument("--drain-timeout", type=float, default=10.0, help="for acks in flight")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if args.baseline_seconds is None:
        args.baseline_seconds = min(args.seconds, 15.0)
    if args.generators <= 0:
        args.generators = min(MAX_GENERATORS, -(-args.streams // STREAMS_PER_GENERATOR))
    args.generators = max(1, min(args.generators, args.streams))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    return finish(result, failures(args, result), as_json=args.json, check=args.check)


if __name__ == "__main__":
    sys.exit(main())
