"""Process-level sections: server, stores, routing, cluster overrides, auth and TLS.

These say how one dispatcher replica runs. The traffic sections (pools, routes, backends,
agents) are in ``traffic.py``; ``DispatcherConfig`` in ``model.py`` joins both.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    model_validator,
)

from dispatcher.config.values import (
    Count,
    DatabaseUrl,
    Duration,
    HostPort,
    HotStoreUrl,
    config_problem,
    redact_url,
)
from dispatcher.event_loop import EventLoopChoice, uvloop_available

LogFormat = Literal["json", "console"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class Section(BaseModel):
    """Base of every config model: unknown keys are errors, loaded values never change."""

    # allow_inf_nan=False: "inf" parses as a float, and an infinite limit is always a typo.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _lower(value: Any) -> Any:
    # Environment variables are often upper case (LOG_LEVEL=INFO); accept either.
    return value.lower() if isinstance(value, str) else value


Name = Annotated[str, Field(min_length=1)]


def _installed_loop(choice: EventLoopChoice) -> EventLoopChoice:
    if choice == "uvloop" and not uvloop_available():
        raise config_problem("uvloop is not installed here (pip install uvloop, or use asyncio)")
    return choice


class ServerConfig(Section):
    """The gRPC listener, shutdown and logging of one replica."""

    listen: HostPort = "127.0.0.1:50051"
    grace_period: Duration = 10.0
    log_format: Annotated[LogFormat, BeforeValidator(_lower)] = "console"
    log_level: Annotated[LogLevel, BeforeValidator(_lower)] = "info"
    metrics_listen: HostPort | None = None
    # auto: uvloop when it is installed (it is a dependency on Linux and macOS), else asyncio.
    event_loop: Annotated[
        EventLoopChoice, BeforeValidator(_lower), AfterValidator(_installed_loop)
    ] = "auto"


class HotStoreConfig(Section):
    """Where shared live state is kept: ``memory://`` (single process) or Redis."""

    url: HotStoreUrl = "memory://"
    # Per ledger call (and per wait for a free connection); past it the pool's failure mode
    # applies. 250 ms by default: the Python client alone takes tens of ms under load on
    # small machines, and a deadline below that trips the failover breaker on mere bursts.
    call_timeout: Duration = Field(default=0.25, gt=0)
    # Dispatcher replicas sharing this hot store. While Redis is unreachable each admits
    # capacity * static_share / replicas from a local bucket, so together they stay within
    # the share; set it to the deployment's replica count (more is safe, fewer over-admits).
    replicas: Count = Field(default=1, ge=1)
    connect_timeout: Duration = Field(default=3.0, gt=0)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # A Redis URL may carry a password; reprs end up in logs and tracebacks.
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "url" else value


class DurableConfig(Section):
    """The durable ledger. The default SQLite path is relative to the working directory."""

    database_url: DatabaseUrl = "sqlite+aiosqlite:///var/dispatcher.sqlite3"
    # Who copies the hot store's journal into SQL. ``embedded``: a consumer inside every
    # ``serve`` process (they share one consumer group). ``external``: none in ``serve``;
    # run ``dispatcher journal`` beside the replicas, so the write-behind's CPU (SQL driver,
    # ORM) never competes with the Route path. Needs a Redis hot store.
    consumer: Literal["embedded", "external"] = "embedded"

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "database_url" else value


class RoutingConfig(Section):
    """How clusters are picked; see DESIGN §6."""

    heartbeat_interval: Duration = Field(default=5.0, gt=0)
    stale_after_intervals: Count = Field(default=3, ge=1)
    policy: Literal["p2c", "least_outstanding", "round_robin", "weighted_round_robin"] = "p2c"
    panic: Literal["fail_open", "fail_closed"] = "fail_open"

    @property
    def stale_after(self) -> float:
        """Seconds without a heartbeat after which a cluster counts as stale."""
        return self.heartbeat_interval * self.stale_after_intervals


class RelayConfig(Section):
    """The result relay (``ResultService`` and the WebSocket gateway), DESIGN §1.

    ``token_secret`` signs each task's result token; replicas must share it. Unset, the first
    replica to start stores a random one in the hot store and the others read it there.
    ``gateway_with_server`` runs the WebSocket gateway inside ``serve`` (the only way with
    ``memory://``); otherwise ``dispatcher gateway`` runs it as a process of its own.
    """

    ttl: Duration = Field(default=24 * 3600.0, gt=0)
    max_bytes_per_task: Count = Field(default=8 * 1024 * 1024, ge=1)
    keepalive_interval: Duration = Field(default=15.0, gt=0)
    token_secret: SecretStr | None = Field(default=None, min_length=16)
    gateway_listen: HostPort = "127.0.0.1:8081"
    gateway_with_server: bool = False
    gateway_max_connections: Count = Field(default=10_000, ge=1)


class ClusterOverride(Section):
    """A static override for a cluster that otherwise announces itself (DESIGN §2a)."""

    id: Name
    pinned: bool = False
    forbidden: bool = False
    weight: Count | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _pinned_or_forbidden(self) -> ClusterOverride:
        if self.pinned and self.forbidden:
            raise config_problem("cannot be both pinned and forbidden", "forbidden")
        return self


class OperatorToken(Section):
    """A bearer token for the Admin API. ``read`` may look; ``admin`` may also change."""

    token: SecretStr = Field(min_length=1)
    role: Literal["read", "admin"] = "read"


class AuthConfig(Section):
    """Credentials; every value is a ``SecretStr`` so it never reaches a log line."""

    operator_tokens: dict[Name, OperatorToken] = Field(default_factory=dict)
    # Operators who authenticate with a client certificate (mutual TLS, ``tls.client_ca_file``):
    # the certificate's common name -> its role. A token, when sent, is checked first.
    operator_certificates: dict[Name, Literal["read", "admin"]] = Field(default_factory=dict)
    agent_tokens: dict[Name, Annotated[SecretStr, Field(min_length=1)]] = Field(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _tokens_unique(self) -> AuthConfig:
        # A shared token would make the caller's identity (and role) ambiguous.
        seen: dict[str, str] = {}
        entries = [
            (("operator_tokens", name, "token"), spec.token)
            for name, spec in self.operator_tokens.items()
        ] + [(("agent_tokens", name), token) for name, token in self.agent_tokens.items()]
        for at, secret in entries:
            where = ".".join(at[:2])
            first = seen.setdefault(secret.get_secret_value(), where)
            if first != where:
                raise config_problem(f"same token as {first}", *at)
        return self


class TlsConfig(Section):
    """Server certificate, and a client CA for mutual TLS. No ``cert_file`` = plaintext."""

    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    client_ca_file: FilePath | None = None

    @model_validator(mode="after")
    def _complete(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            other = "cert_file" if missing == "key_file" else "key_file"
            raise config_problem(f"required when {other} is set", missing)
        if self.client_ca_file is not None and self.cert_file is None:
            raise config_problem("mutual TLS needs cert_file and key_file too", "client_ca_file")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


__all__ = [
    "AuthConfig",
    "ClusterOverride",
    "DurableConfig",
    "HotStoreConfig",
    "LogFormat",
    "LogLevel",
    "Name",
    "OperatorToken",
    "RelayConfig",
    "RoutingConfig",
    "Section",
    "ServerConfig",
    "TlsConfig",
]
