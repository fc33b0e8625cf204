"""Dispatcher configuration: one frozen, validated ``DispatcherConfig`` per process.

Usage::

    config = load_config()                                  # $DISPATCHER_CONFIG or defaults
    config = load_config("dispatcher.yaml", overrides={"server.listen": "127.0.0.1:0"})
    config.hot_store.url, config.pools[0].tpm, config.routing.stale_after

With no file and no environment the result is the embedded system: an in-memory hot store and
a SQLite ledger at ``var/dispatcher.sqlite3`` under the working directory. The commented
example ``dispatcher/config_example.yaml`` (``EXAMPLE_CONFIG_PATH``) shows every section.

Precedence, highest first: ``overrides`` (command-line flags) > environment > file > defaults.

=============================  ========================  =====================================
environment variable           sets                      example
=============================  ========================  =====================================
``DISPATCHER_CONFIG``          the file to read          ``/etc/dispatcher/dispatcher.yaml``
                               (when no path is given)
``DISPATCHER_LISTEN``          ``server.listen``         ``0.0.0.0:50051``
``DISPATCHER_REDIS_URL``       ``hot_store.url``         ``redis://redis:6379/0``
``DISPATCHER_DATABASE_URL``    ``durable.database_url``  ``postgresql+asyncpg://app@db/ledger``
``DISPATCHER_LOG_FORMAT``      ``server.log_format``     ``json``
``DISPATCHER_LOG_LEVEL``       ``server.log_level``      ``debug``
``DISPATCHER_EVENT_LOOP``      ``server.event_loop``     ``asyncio`` (default ``auto``: uvloop)
``DISPATCHER_METRICS_LISTEN``  ``server.metrics_listen`` ``0.0.0.0:9100``
``DISPATCHER_GATEWAY_LISTEN``  ``relay.gateway_listen``  ``0.0.0.0:8081``
``DISPATCHER_REPLICAS``        ``hot_store.replicas``    ``3``
=============================  ========================  =====================================

An empty variable counts as unset. Durations are ``250ms``, ``30s``, ``5m``, ``1h`` or plain
seconds, stored as float seconds. Every problem raises ``dispatcher.errors.ConfigError(source,
field, reason)`` for the first bad value: ``source`` is the file path, ``"environment"`` or
``"command line"``; ``field`` is a path such as ``pools[1].tpm``; ``(file)`` and
``(top level)`` stand for the file as a whole.

Secrets (tokens) are ``SecretStr``; reprs show URL passwords as ``***``; use
``redact_url`` before logging a URL yourself.
"""

from __future__ import annotations

from pathlib import Path

from dispatcher.config.loading import (
    COMMAND_LINE,
    CONFIG_PATH_VARIABLE,
    ENVIRONMENT,
    ENVIRONMENT_VARIABLES,
    find_config_path,
    load_config,
)
from dispatcher.config.model import DispatcherConfig
from dispatcher.config.sections import (
    AuthConfig,
    ClusterOverride,
    DurableConfig,
    HotStoreConfig,
    LogFormat,
    LogLevel,
    OperatorToken,
    RelayConfig,
    RoutingConfig,
    ServerConfig,
    TlsConfig,
)
from dispatcher.config.traffic import (
    DEFAULT_MAINTENANCE_MESSAGE,
    LIMIT_DIMENSIONS,
    AgentSpec,
    BackendSpec,
    BreakerSpec,
    EstimateSpec,
    PoolSpec,
    RouteSpec,
    WeightedBackend,
)
from dispatcher.config.values import parse_duration, redact_url, split_host_port

EXAMPLE_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config_example.yaml"

__all__ = [
    "COMMAND_LINE",
    "CONFIG_PATH_VARIABLE",
    "DEFAULT_MAINTENANCE_MESSAGE",
    "ENVIRONMENT",
    "ENVIRONMENT_VARIABLES",
    "EXAMPLE_CONFIG_PATH",
    "LIMIT_DIMENSIONS",
    "AgentSpec",
    "AuthConfig",
    "BackendSpec",
    "BreakerSpec",
    "ClusterOverride",
    "DispatcherConfig",
    "DurableConfig",
    "EstimateSpec",
    "HotStoreConfig",
    "LogFormat",
    "LogLevel",
    "OperatorToken",
    "PoolSpec",
    "RelayConfig",
    "RouteSpec",
    "RoutingConfig",
    "ServerConfig",
    "TlsConfig",
    "WeightedBackend",
    "find_config_path",
    "load_config",
    "parse_duration",
    "redact_url",
    "split_host_port",
]
