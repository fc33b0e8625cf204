"""``dispatchctl``: the operator CLI. It talks only to the dispatcher's gRPC API.

    dispatchctl [--server HOST:PORT] [--output table|json] health

The server address comes from ``--server``, else ``DISPATCHCTL_SERVER``, else
127.0.0.1:50051. Failures print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Sequence

import grpc

from dispatcher.cli.common import EXIT_FAILED, EXIT_OK, fail
from dispatcher.rpc.health_client import check_health
from dispatcher.server import SERVICE_NAMES

PROGRAM = "dispatchctl"
DEFAULT_SERVER = "127.0.0.1:50051"
CALL_TIMEOUT_S = 5.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--server",
        default=os.environ.get("DISPATCHCTL_SERVER", DEFAULT_SERVER),
        help="dispatcher address (env DISPATCHCTL_SERVER)",
    )
    parser.add_argument("--output", choices=("table", "json"), default="table")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("health", help="serving status of every dispatcher service")
    return parser


async def health_of(server: str) -> dict[str, str]:
    """Serving status per service name ("" is the server as a whole)."""
    async with grpc.aio.insecure_channel(server) as channel:
        return {
            name or "(server)": await check_health(channel, name, CALL_TIMEOUT_S)
            for name in ("", *SERVICE_NAMES)
        }


def print_health(statuses: dict[str, str], output: str) -> None:
    if output == "json":
        print(json.dumps(statuses, indent=2))
        return
    width = max(len(name) for name in statuses)
    for name, status in statuses.items():
        print(f"{name:<{width}}  {status}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        statuses = asyncio.run(health_of(args.server))
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            fail(PROGRAM, f"cannot reach the dispatcher at {args.server}", EXIT_FAILED)
        fail(PROGRAM, f"{exc.code().name}: {exc.details()}", EXIT_FAILED)
    print_health(statuses, args.output)
    serving = all(status == "SERVING" for status in statuses.values())
    return EXIT_OK if serving else EXIT_FAILED
