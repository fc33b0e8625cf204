"""``regional-agent``: the process that runs beside each cluster's workers.

    regional-agent run --config FILE
    regional-agent check [--dispatcher HOST:PORT]

``run`` keeps the cluster's heartbeat stream to the dispatcher and serves the local worker
API until SIGTERM (then reports DRAIN and stops); a bad config file exits 2 with one line
naming the file, field and reason. ``check`` exits 0 when the dispatcher answers SERVING,
1 otherwise: a probe for orchestrators and a first step when wiring a new cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

import grpc

from dispatcher.errors import ConfigError
from dispatcher.logs import LogFormat, configure_logging
from dispatcher.rpc.health_client import check_health
from regional_agent.config import load_agent_config
from regional_agent.runner import serve_until_signalled

PROGRAM = "regional-agent"
DEFAULT_DISPATCHER = "127.0.0.1:50051"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser("check", help="exit 0 if the dispatcher is SERVING")
    check.add_argument(
        "--dispatcher",
        default=os.environ.get("REGIONAL_AGENT_DISPATCHER", DEFAULT_DISPATCHER),
        help="dispatcher address (env REGIONAL_AGENT_DISPATCHER)",
    )
    check.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    run = commands.add_parser("run", help="report to the dispatcher until SIGTERM")
    run.add_argument(
        "--config",
        default=os.environ.get("REGIONAL_AGENT_CONFIG"),
        required="REGIONAL_AGENT_CONFIG" not in os.environ,
        help="YAML config file (env REGIONAL_AGENT_CONFIG)",
    )
    run.add_argument("--log-format", choices=("json", "console"), default="console")
    return parser


async def dispatcher_serving(address: str, timeout: float) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            status = await check_health(channel, "", timeout)
        except grpc.aio.AioRpcError as exc:
            print(f"{PROGRAM}: {address}: {exc.code().name}", file=sys.stderr)
            return False
    return status == "SERVING"


def run(config_path: str, log_format: LogFormat) -> int:
    configure_logging(log_format)
    try:
        config = load_agent_config(config_path)
    except ConfigError as exc:
        print(f"{PROGRAM}: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve_until_signalled(config))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run(args.config, args.log_format)
    serving = asyncio.run(dispatcher_serving(args.dispatcher, args.timeout))
    print(f"{PROGRAM}: dispatcher at {args.dispatcher}: {'SERVING' if serving else 'NOT SERVING'}")
    return 0 if serving else 1
