"""``dispatchctl``: the operator CLI. It talks only to the dispatcher's gRPC API.

    dispatchctl [--server HOST:PORT] [--token TOKEN] [--output table|json] COMMAND

    health                        serving status of every service
    quota [POOL ...]              limit, used, reserved, remaining and time to refill per pool
    clusters                      clusters with state, liveness and load
    breakers [--agent A]          circuit breaker per agent version: state, rates, thresholds
    sessions [--cluster C]        sticky sessions and their pinned clusters (up to --limit)
    drain CLUSTER [--reason R]    stop new work to a cluster; undrain CLUSTER lets it back
    limits set POOL DIM=VALUE...  change a pool's limits (e.g. tpm=300000 rpm=1800)
    weights set ROUTE B=W...      replace a route's backend weights (e.g. llama3-local=90)
    breakers set AGENT --FLAG V   change an agent's breaker thresholds (only those given)
    watch [--type T] [--count N]  live decisions, spillovers, trips, handovers, drains
    completion bash|zsh|tcsh      a shell completion script (e.g. >> ~/.bashrc)
    explain ROUTE --agent A       why Route would pick what it picks: every candidate with its
        [--task-class C]          filter reason and score (a dry run: nothing is reserved)
        [--session KEY] [--input-tokens N] [--max-output-tokens N]

The server, the operator token and TLS files come from flags, else the environment, else a
config file (``cli.ctl_config``), else 127.0.0.1:50051 in plaintext. Every failure prints one
line and exits 1 (2 for a usage error).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence

import grpc
import shtab

from dispatcher.cli import ctl_changes, ctl_config, render
from dispatcher.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail
from dispatcher.rpc.health_client import check_health
from dispatcher.server import SERVICE_NAMES
from dispatcher.v1 import admin_pb2, admin_pb2_grpc, common_pb2, routing_pb2

PROGRAM = "dispatchctl"

Command = Callable[[grpc.aio.Channel, argparse.Namespace], Awaitable[int]]
TASK_CLASSES = {
    "light": common_pb2.TASK_CLASS_LIGHT,
    "standard": common_pb2.TASK_CLASS_STANDARD,
    "heavy": common_pb2.TASK_CLASS_HEAVY,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Operate an agent-dispatcher.",
        epilog="Environment: DISPATCHCTL_SERVER, DISPATCHCTL_TOKEN, DISPATCHCTL_TLS_CA, "
        "DISPATCHCTL_TLS_CERT, DISPATCHCTL_TLS_KEY, DISPATCHCTL_CONFIG.",
    )
    ctl_config.add_flags(parser)
    parser.add_argument("--output", "-o", choices=("table", "json"), default="table")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per call (default 5)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("health", help="serving status of every service")
    quota = commands.add_parser("quota", help="quota per pool")
    quota.add_argument("pools", nargs="*", metavar="POOL")
    commands.add_parser("clusters", help="clusters with state and load")
    breakers = commands.add_parser("breakers", help="circuit breakers per agent version")
    breakers.add_argument("--agent", default="", help="only this agent's versions")
    sessions = commands.add_parser("sessions", help="sticky sessions and their clusters")
    sessions.add_argument("--cluster", default="", help="only sessions pinned here")
    sessions.add_argument(
        "--limit", type=session_limit, default=100, help="at most this many (1..1000)"
    )
    for name in ("drain", "undrain"):
        sub = commands.add_parser(name, help=f"{name} a cluster")
        sub.add_argument("cluster")
        sub.add_argument("--reason", default="")
    limits = commands.add_parser("limits", help="pool limits")
    limits_commands = limits.add_subparsers(dest="limits_command", required=True, metavar="ACTION")
    limits_set = limits_commands.add_parser("set", help="change a pool's limits")
    limits_set.add_argument("pool")
    limits_set.add_argument("limits", nargs="+", metavar="DIM=VALUE")
    ctl_changes.add_commands(commands, breakers)
    completion = commands.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=("bash", "zsh", "tcsh"))
    explain = commands.add_parser("explain", help="dry-run a route: every candidate and why")
    explain.add_argument("route")
    explain.add_argument("--agent", required=True, help="agent name, or agent@version to pin")
    explain.add_argument("--task-class", choices=sorted(TASK_CLASSES))
    explain.add_argument("--session", default="", help="session key (sticky routing)")
    explain.add_argument("--input-tokens", type=int, default=0)
    explain.add_argument("--max-output-tokens", type=int, default=0)
    return parser


def session_limit(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError("must be 1..1000")
    return value


def parse_limits(items: Sequence[str]) -> dict[str, float]:
    limits = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            limits[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            fail(PROGRAM, f"limit {item!r}: expected DIM=NUMBER, e.g. tpm=300000", EXIT_USAGE)
    return limits


def metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {args.token}"),) if args.token else ()


def show(args: argparse.Namespace, reply: object, table: Callable[[], render.Table]) -> None:
    if args.output == "json":
        print(render.as_json(reply))  # type: ignore[arg-type]
    else:
        render.print_table(table())


async def cmd_health(channel: grpc.aio.Channel, args: argparse.Namespace) -> int:
    statuses = {
        name or "(server)": await check_health(channel, name, args.timeout)
        for name in ("", *SERVICE_NAMES)
    }
    if args.output == "json":
        print(json.dumps(statuses, indent=2))
    else:
        width = max(map(len, statuses))
        for name, status in statuses.items():
            print(f"{name:<{width}}  {status}")
    return EXIT_OK if all(s == "SERVING" for s in statuses.values()) else EXIT_FAILED


async def cmd_quota(channel: grpc.aio.Channel, args: argparse.Namespace) -> int:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    reply = await stub.GetQuota(
        admin_pb2.GetQuotaRequest(pool_ids=args.pools),
        metadata=metadata(args),
        timeout=args.timeout,
    )
    show(args, reply, lambda: render.quota_table(reply.pools))
    return EXIT_OK


async def cmd_clusters(channel: grpc.aio.Channel, args: argparse.Namespace) -> int:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    reply = await stub.ListClusters(
        admin_pb2.ListClustersRequest(), metadata=metadata(args), timeout=args.timeout
    )
    show(args, reply, lambda: render.clusters_table(reply.clusters))
    return EXIT_OK


async def cmd_breakers(channel: grpc.aio.Channel, args: argparse.Namespace) -> int:
    if args.breakers_command == "set":
        return await ctl_changes.cmd_set_breaker(channel, args, metadata(args))
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    reply = await stub.ListBreakers(
        admin_pb2.ListBreakersRequest(agent=args.agent),
        metadata=metadata(args),
        timeout=args.timeout,
    )
    show(args, reply, lambda: render.breakers_table(reply.breakers))
    return EXIT_OK


async def cmd_sessions(channel: grpc.aio.Channel, args: argparse.Namespace) -> int:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    request = admin_pb2.ListSessionsRequest(cluster_id=args.cluster, limit=args.limit)
    reply = await stub.ListSessions(request, metadata=metadata(args), timeout=args.timeout)
    show(args, reply, lambda: render.sessions_table(reply.sessions))
    return EXIT_OK


async def cmd_drain(channel: grpc.aio.Channel, args: argparse.Namespace) -> int:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    method = stub.Drain if args.command == "drain" else stub.Undrain
    request = admin_pb2.DrainRequest(cluster_id=args.cluster, reason=args.reason)
    reply = await method(request, metadata=metadata(args), timeout=args.timeout)
    show(args, reply, lambda: render.clusters_table([reply]))
    return EXIT_OK


async def cmd_limits(channel: grpc.aio.Channel, args: argparse.Namespace) -> int:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    request = admin_pb2.SetLimitsRequest(pool_id=args.pool, limits=parse_limits(args.limits))
    reply = await stub.SetLimits(request, metadata=metadata(args), timeout=args.timeout)
    show(args, reply, lambda: render.quota_table([reply]))
    return EXIT_OK


def explain_request(args: argparse.Namespace) -> routing_pb2.RouteRequest:
    agent, _, version = args.agent.partition("@")
    request = routing_pb2.RouteRequest(
        route=args.route,
        agent=agent,
        agent_version=args.agent if version else "",
        session_key=args.session,
    )
    if args.task_class:
        request.task_class = TASK_CLASSES[args.task_class]
    if args.input_tokens or args.max_output_tokens:
        request.estimate.input_tokens = args.input_tokens
        request.estimate.max_output_tokens = args.max_output_tokens
    return request


async def cmd_explain(channel: grpc.aio.Channel, args: argparse.Namespace) -> int:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    reply = await stub.Explain(explain_request(args), metadata=metadata(args), timeout=args.timeout)
    show(args, reply, lambda: render.explain_table(reply))
    return EXIT_OK


COMMANDS: dict[str, Command] = {
    "health": cmd_health,
    "quota": cmd_quota,
    "clusters": cmd_clusters,
    "breakers": cmd_breakers,
    "sessions": cmd_sessions,
    "drain": cmd_drain,
    "undrain": cmd_drain,
    "limits": cmd_limits,
    "explain": cmd_explain,
    "weights": lambda channel, args: ctl_changes.cmd_weights(channel, args, metadata(args)),
    "watch": lambda channel, args: ctl_changes.cmd_watch(channel, args, metadata(args)),
}


def explain_rpc_error(error: grpc.aio.AioRpcError, server: str) -> str:
    code = error.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return f"cannot reach the dispatcher at {server} ({code.name.lower()})"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"credential refused: {error.details()} (set --token or DISPATCHCTL_TOKEN)"
    return f"{code.name}: {error.details()}"


async def run(args: argparse.Namespace, target: ctl_config.Connection) -> int:
    async with target.channel() as channel:
        return await COMMANDS[args.command](channel, args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "completion":
        print(shtab.complete(parser, args.shell))
        return EXIT_OK
    target = ctl_config.connection(args)
    args.server, args.token = target.server, target.token
    try:
        return asyncio.run(run(args, target))
    except grpc.aio.AioRpcError as error:
        fail(PROGRAM, explain_rpc_error(error, args.server), EXIT_FAILED)
