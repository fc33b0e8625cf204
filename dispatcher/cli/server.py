"""``dispatcher``: run the server, migrate the durable ledger, run the gateway or the journal
consumer on their own, or the demo.

    dispatcher serve [--config FILE] [--listen HOST:PORT] [--redis-url URL] [--database-url URL]
                      [--with-gateway]
    dispatcher migrate [--config FILE] [--database-url URL] [--revision REV]
    dispatcher gateway [--config FILE] [--listen HOST:PORT] [--redis-url URL]
    dispatcher journal [--config FILE] [--redis-url URL] [--database-url URL]
    dispatcher demo [--duration N] [--rate R] [--json]

With no flags ``serve`` runs the embedded default: in-memory hot store and a SQLite ledger at
``var/dispatcher.sqlite3``. Flags override the environment, which overrides the config file.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from dispatcher import event_loop
from dispatcher.cli.common import EXIT_OK, EXIT_USAGE, fail
from dispatcher.config import DispatcherConfig, load_config
from dispatcher.errors import BackendUnavailable, ConfigError, FailedPrecondition
from dispatcher.logs import configure_logging

PROGRAM = "dispatcher"

# Flag destination -> dotted config path it overrides.
FLAG_PATHS = {
    "listen": "server.listen",
    "redis_url": "hot_store.url",
    "database_url": "durable.database_url",
    "log_format": "server.log_format",
    "log_level": "server.log_level",
    "with_gateway": "relay.gateway_with_server",
    "gateway_listen": "relay.gateway_listen",
}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML config file (env DISPATCHER_CONFIG)")
    parser.add_argument("--database-url", metavar="URL", help="durable ledger (SQLAlchemy URL)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gRPC server")
    _add_config_flags(serve)
    serve.add_argument("--listen", metavar="HOST:PORT", help="default 127.0.0.1:50051")
    serve.add_argument("--redis-url", metavar="URL", help="hot store (default memory://)")
    serve.add_argument("--log-format", choices=("json", "console"))
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    serve.add_argument(
        "--with-gateway",
        action="store_true",
        default=None,
        help="also serve the WebSocket result gateway (relay.gateway_listen)",
    )

    gateway = commands.add_parser("gateway", help="run the WebSocket result gateway alone")
    gateway.add_argument(
        "--config", metavar="FILE", help="YAML config file (env DISPATCHER_CONFIG)"
    )
    gateway.add_argument(
        "--listen", dest="gateway_listen", metavar="HOST:PORT", help="default 127.0.0.1:8081"
    )
    gateway.add_argument("--redis-url", metavar="URL", help="the replicas' hot store (Redis)")
    gateway.add_argument("--log-format", choices=("json", "console"))
    gateway.add_argument("--log-level", choices=("debug", "info", "warning", "error"))

    journal = commands.add_parser(
        "journal", help="copy the hot store's journal into SQL (durable.consumer: external)"
    )
    _add_config_flags(journal)
    journal.add_argument("--redis-url", metavar="URL", help="the replicas' hot store (Redis)")
    journal.add_argument("--log-format", choices=("json", "console"))
    journal.add_argument("--log-level", choices=("debug", "info", "warning", "error"))

    demo = commands.add_parser(
        "demo", help="the whole system in one process: clusters, load and a scripted story"
    )
    demo.add_argument("--duration", type=positive, default=60.0, help="seconds (default 60)")
    demo.add_argument("--rate", type=positive, default=20.0, help="Routes per second (20)")
    demo.add_argument("--json", action="store_true", help="headless: print a JSON summary")

    migrate = commands.add_parser("migrate", help="upgrade the durable ledger's schema")
    _add_config_flags(migrate)
    migrate.add_argument("--revision", default="head", help="target revision (default head)")
    return parser


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def config_from_args(args: argparse.Namespace) -> DispatcherConfig:
    overrides = {
        path: getattr(args, dest)
        for dest, path in FLAG_PATHS.items()
        if getattr(args, dest, None) is not None
    }
    return load_config(args.config, env=os.environ, overrides=overrides)


async def _serve(config: DispatcherConfig) -> None:
    from dispatcher.server import DispatcherServer

    await DispatcherServer(config).serve()


async def _gateway(config: DispatcherConfig) -> None:
    from dispatcher.relay.gateway_process import run_gateway

    await run_gateway(config)


async def _journal(config: DispatcherConfig) -> None:
    from dispatcher.ledger.sql.journal_process import run_journal

    await run_journal(config)


def _migrate(config: DispatcherConfig, revision: str) -> None:
    from dispatcher.ledger.sql.migrate import run_migrate

    run_migrate(config.durable.database_url, revision)
    print(f"{PROGRAM}: durable ledger at revision {revision}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from dispatcher.demo.cli import demo_main

        return demo_main(args.duration, args.rate, args.json)
    try:
        config = config_from_args(args)
        configure_logging(config.server.log_format, config.server.log_level)
        if args.command == "serve":
            event_loop.run(_serve(config), config.server.event_loop)
        elif args.command == "gateway":
            event_loop.run(_gateway(config), config.server.event_loop)
        elif args.command == "journal":
            event_loop.run(_journal(config), config.server.event_loop)
        elif args.command == "migrate":
            _migrate(config, args.revision)
    except (ConfigError, BackendUnavailable, FailedPrecondition, OSError) as exc:
        fail(PROGRAM, str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        pass
    return EXIT_OK
