"""dispatchctl's ``weights set``, ``breakers set`` and ``watch``.

weights set ROUTE BACKEND=WEIGHT...     replace a route's weights (e.g. llama3-local=90
                                        gpt-4o=10); backends not named leave the route
breakers set AGENT [--failure-rate R] [--slow-call-rate R] [--slow-call-duration S]
    [--window N] [--min-calls N] [--open-for S] [--max-open-for S] [--half-open-probes N]
                                        change only the thresholds given
watch [--type T ...] [--count N]        live events of the replica answering: a rolling
                                        view, or one JSON object per line with -o json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, deque
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.json_format import MessageToDict
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from dispatcher.cli.common import EXIT_OK, EXIT_USAGE, fail
from dispatcher.v1 import admin_pb2, admin_pb2_grpc

PROGRAM = "dispatchctl"
EVENT_TYPES = {
    name.removeprefix("EVENT_TYPE_").lower(): value
    for name, value in admin_pb2.EventType.items()
    if value != admin_pb2.EVENT_TYPE_UNSPECIFIED
}
TYPE_NAMES = {value: name for name, value in EVENT_TYPES.items()}
ROLLING = 20
BREAKER_FLAGS = {
    "failure_rate": float,
    "slow_call_rate": float,
    "slow_call_duration": float,
    "window": int,
    "min_calls": int,
    "open_for": float,
    "max_open_for": float,
    "half_open_probes": int,
}
DURATIONS = ("slow_call_duration", "open_for", "max_open_for")
BREAKER_HELP = {
    "failure_rate": "trip above this share of failed calls, 0 < N <= 1 (default 0.05)",
    "slow_call_rate": "trip above this share of slow calls, 0 < N <= 1",
    "slow_call_duration": "seconds after which a call counts as slow",
    "window": "calls in the sliding window",
    "min_calls": "calls needed before the rates are judged (<= window)",
    "open_for": "seconds to stay open before probing; doubles on each re-trip",
    "max_open_for": "cap on that wait, seconds",
    "half_open_probes": "calls let through while half-open",
}


def add_commands(commands: Any, breakers: argparse.ArgumentParser) -> None:
    """``weights set``, ``breakers set`` (under the existing ``breakers``) and ``watch``."""
    weights = commands.add_parser("weights", help="route weights")
    actions = weights.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    weights_set = actions.add_parser("set", help="replace a route's backend weights")
    weights_set.add_argument("route")
    weights_set.add_argument("weights", nargs="+", metavar="BACKEND=WEIGHT")

    breaker_actions = breakers.add_subparsers(dest="breakers_command", metavar="ACTION")
    breakers_set = breaker_actions.add_parser("set", help="change an agent's thresholds")
    breakers_set.add_argument("agent")
    for name, kind in BREAKER_FLAGS.items():
        flag = f"--{name.replace('_', '-')}"
        breakers_set.add_argument(flag, type=kind, metavar="N", help=BREAKER_HELP[name])

    watch = commands.add_parser("watch", help="live events: decisions, spillovers, trips ...")
    watch.add_argument(
        "--type", dest="types", action="append", choices=sorted(EVENT_TYPES), default=[]
    )
    watch.add_argument("--count", type=int, default=0, help="stop after N events (0: never)")


def parse_weights(items: Sequence[str]) -> list[admin_pb2.BackendWeight]:
    weights = []
    for item in items:
        name, sep, value = item.partition("=")
        if not (sep and name and value.isdigit()):
            fail(PROGRAM, f"weight {item!r}: expected BACKEND=WEIGHT, a whole number >= 0")
        weights.append(admin_pb2.BackendWeight(backend=name, weight=int(value)))
    return weights


def breaker_settings(args: argparse.Namespace) -> admin_pb2.BreakerSettings:
    settings = admin_pb2.BreakerSettings(agent=args.agent)
    given = {n: getattr(args, n) for n in BREAKER_FLAGS if getattr(args, n) is not None}
    if not given:
        fail(PROGRAM, "name at least one threshold, e.g. --failure-rate 0.1", EXIT_USAGE)
    for name, value in given.items():
        if value <= 0:
            fail(PROGRAM, f"--{name.replace('_', '-')}: must be > 0", EXIT_USAGE)
        if name in DURATIONS:
            duration = Duration()
            duration.FromNanoseconds(round(value * 1e9))
            getattr(settings, name).CopyFrom(duration)
        else:
            setattr(settings, name, value)
    return settings


async def cmd_weights(channel: grpc.aio.Channel, args: argparse.Namespace, md: Any) -> int:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    request = admin_pb2.SetWeightsRequest(route=args.route, weights=parse_weights(args.weights))
    reply = await stub.SetWeights(request, metadata=md, timeout=args.timeout)
    if args.output == "json":
        print(json.dumps(MessageToDict(reply, preserving_proto_field_name=True), indent=2))
        return EXIT_OK
    total = sum(w.weight for w in reply.weights)
    table = Table(title=f"weights of {reply.route}", title_justify="left")
    for column in ("backend", "weight", "share"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    for w in reply.weights:
        table.add_row(w.backend, str(w.weight), f"{w.weight / total:.1%}")
    Console().print(table)
    return EXIT_OK


async def cmd_set_breaker(channel: grpc.aio.Channel, args: argparse.Namespace, md: Any) -> int:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    request = admin_pb2.SetBreakerRequest(settings=breaker_settings(args))
    reply = await stub.SetBreaker(request, metadata=md, timeout=args.timeout)
    fields = MessageToDict(reply, preserving_proto_field_name=True)
    if args.output == "json":
        print(json.dumps(fields, indent=2))
    else:
        print(" ".join(f"{k}={v}" for k, v in fields.items()))
    return EXIT_OK


async def cmd_watch(channel: grpc.aio.Channel, args: argparse.Namespace, md: Any) -> int:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    request = admin_pb2.WatchRequest(types=[EVENT_TYPES[t] for t in args.types])
    call = stub.Watch(request, metadata=md)
    if args.output == "json":
        return await _watch_json(call, args.count)
    return await _watch_live(call, args.count)


async def _watch_json(call: Any, count: int) -> int:
    seen = 0
    async for event in call:
        line = MessageToDict(event, preserving_proto_field_name=True)
        line["type"] = TYPE_NAMES.get(event.type, "unknown")
        print(json.dumps(line), flush=True)
        seen += 1
        if count and seen >= count:
            call.cancel()
            break
    return EXIT_OK


async def _watch_live(call: Any, count: int) -> int:
    recent: deque[admin_pb2.Event] = deque(maxlen=ROLLING)
    totals: Counter[str] = Counter()
    with Live(watch_view(recent, totals), refresh_per_second=4) as live:
        async for event in call:
            recent.append(event)
            totals[TYPE_NAMES.get(event.type, "unknown")] += 1
            live.update(watch_view(recent, totals))
            if count and totals.total() >= count:
                call.cancel()
                break
    return EXIT_OK


def watch_view(recent: Sequence[admin_pb2.Event], totals: Counter[str]) -> Group:
    """Counts per event type over the newest events, newest last."""
    counts = "  ".join(f"{name} {totals[name]}" for name in sorted(EVENT_TYPES) if totals[name])
    table = Table(title=f"watch  {counts or 'waiting for events'}", title_justify="left")
    for column in ("time", "type", "cluster", "agent version", "what"):
        table.add_column(column, no_wrap=column != "what")
    for event in recent:
        at = datetime.fromtimestamp(event.at.ToNanoseconds() / 1e9).strftime("%H:%M:%S.%f")[:-3]
        table.add_row(
            at,
            TYPE_NAMES.get(event.type, "?"),
            event.cluster_id,
            event.agent_version,
            event.summary,
        )
    return Group(table)
