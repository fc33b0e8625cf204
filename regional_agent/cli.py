"""``regional-agent``: the process that runs beside each cluster's workers.

    regional-agent run --config FILE
    regional-agent check [--dispatcher HOST:PORT | --config FILE]
    regional-agent simulate-workers [--api HOST:PORT] [--rate N] [--duration S] ...

``run`` keeps the cluster's heartbeat stream to the dispatcher and serves the local worker
API until SIGTERM (then reports DRAIN and stops); a bad config file exits 2 with one line
naming the file, field and reason. ``check`` exits 0 when the dispatcher answers SERVING,
1 otherwise: a probe for orchestrators and a first step when wiring a new cluster.
``simulate-workers`` drives a running agent's local API through the worker SDK with
realistic simulated tasks (``regional_agent.simulate``) and prints a JSON summary; it exits 1
when the agent refused or could not take a call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence

import grpc

from dispatcher import event_loop
from dispatcher.errors import ConfigError
from dispatcher.logs import LogFormat, configure_logging
from dispatcher.rpc.health_client import check_health
from regional_agent.channel import open_channel
from regional_agent.config import AgentTls, load_agent_config
from regional_agent.runner import serve_until_signalled
from regional_agent.sdk import DEFAULT_ADDRESS
from regional_agent.simulate import DEFAULT_POOLS, SimulationSettings, comma_list, simulate

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
    check.add_argument(
        "--config", metavar="FILE", help="take the dispatcher address and TLS from this file"
    )
    run = commands.add_parser("run", help="report to the dispatcher until SIGTERM")
    run.add_argument(
        "--config",
        default=os.environ.get("REGIONAL_AGENT_CONFIG"),
        required="REGIONAL_AGENT_CONFIG" not in os.environ,
        help="YAML config file (env REGIONAL_AGENT_CONFIG)",
    )
    run.add_argument("--log-format", choices=("json", "console"), default="console")
    _add_simulate_parser(commands)
    return parser


def _add_simulate_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sim = commands.add_parser("simulate-workers", help="simulated workers on the local API")
    sim.add_argument(
        "--api",
        default=os.environ.get("REGIONAL_AGENT_API", DEFAULT_ADDRESS),
        help="the agent's local API (env REGIONAL_AGENT_API)",
    )
    sim.add_argument("--rate", type=_positive, default=5.0, help="tasks per second (default 5)")
    sim.add_argument("--duration", type=_positive, default=60.0, help="seconds (default 60)")
    sim.add_argument("--failure-rate", type=_share, default=0.02, help="0..1 (default 0.02)")
    sim.add_argument(
        "--versions",
        type=comma_list,
        default=("auditor@16.4",),
        help="comma-separated agent versions the tasks run (default auditor@16.4)",
    )
    sim.add_argument(
        "--pools",
        type=comma_list,
        default=DEFAULT_POOLS,
        help="comma-separated pool ids; the first segment picks the header format",
    )
    sim.add_argument(
        "--time-scale", type=_positive, default=1.0, help="multiplies every task length"
    )
    sim.add_argument("--seed", type=int, default=None, help="same seed, same tasks")


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def simulate_workers(args: argparse.Namespace) -> int:
    settings = SimulationSettings(
        rate=args.rate,
        duration_s=args.duration,
        failure_rate=args.failure_rate,
        versions=args.versions,
        pools=args.pools,
        time_scale=args.time_scale,
        seed=args.seed,
    )
    summary = asyncio.run(simulate(args.api, settings))
    print(json.dumps(summary.as_dict(), indent=2))
    return 1 if summary.api_errors else 0


async def dispatcher_serving(address: str, timeout: float, tls: AgentTls | None = None) -> bool:
    async with open_channel(address, tls) as channel:
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
    event_loop.run(serve_until_signalled(config))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run(args.config, args.log_format)
    if args.command == "simulate-workers":
        return simulate_workers(args)
    address, tls = args.dispatcher, None
    if args.config:
        try:
            config = load_agent_config(args.config)
        except ConfigError as exc:
            print(f"{PROGRAM}: error: {exc}", file=sys.stderr)
            return 2
        address, tls = config.dispatcher, config.tls
    serving = asyncio.run(dispatcher_serving(address, args.timeout, tls))
    print(f"{PROGRAM}: dispatcher at {address}: {'SERVING' if serving else 'NOT SERVING'}")
    return 0 if serving else 1
