"""The regional agent's YAML config: what its cluster is and where the dispatcher is.

    cluster_id: westeurope-1
    region: westeurope
    endpoint: agents.westeurope.example:443
    slots: 32
    lanes: {heavy: 8}                       # slots set aside per lane
    versions: [auditor@16.4]
    backends: [gpt-4o]
    pool_ids: [azure-openai/westeurope/gpt-4o]
    dispatcher: dispatcher.internal:50051
    token: ...                              # bearer token; omit when auth is off
    tls:                                    # omit for plaintext
      ca_file: /etc/agent/dispatcher-ca.crt # verifies the dispatcher (system roots if omitted)
      cert_file: /etc/agent/client.crt      # mutual TLS: common name = cluster_id
      key_file: /etc/agent/client.key
    interval: 5s
    outbox: /var/lib/regional-agent/outbox.sqlite3
    local_api: 127.0.0.1:8787               # loopback only: workers on this host

Every problem is one ``ConfigError`` naming the file, the field and the reason.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from dispatcher.config.loading import dotted, read_config_file
from dispatcher.config.values import Count, Duration, HostPort, split_host_port
from dispatcher.errors import ConfigError
from dispatcher.fleet.model import Lane

Id = str


class AgentTls(BaseModel):
    """TLS to the dispatcher; a client certificate (``cert_file`` + ``key_file``) for mTLS."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: FilePath | None = None
    cert_file: FilePath | None = None
    key_file: FilePath | None = None

    @model_validator(mode="after")
    def _pair(self) -> AgentTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster_id: Id = Field(min_length=1, max_length=128)
    region: Id = Field(min_length=1, max_length=128)
    endpoint: str = Field(min_length=1, max_length=128)
    slots: Count = Field(ge=1)
    #: None: what the host (or its cgroup) offers, measured at start.
    cores: float | None = Field(default=None, ge=0)
    memory_bytes: Count | None = Field(default=None, ge=0)
    lanes: dict[Lane, Count] = Field(default_factory=dict)
    versions: tuple[Id, ...] = ()
    backends: tuple[Id, ...] = ()
    pool_ids: tuple[Id, ...] = ()
    dispatcher: HostPort = "127.0.0.1:50051"
    token: SecretStr | None = None
    tls: AgentTls | None = None
    interval: Duration = Field(default=5.0, gt=0)
    #: Tasks running longer than this count as slow calls for the breaker.
    slow_call: Duration = Field(default=60.0, gt=0)
    outbox: Path = Path("regional-agent-outbox.sqlite3")
    local_api: HostPort = "127.0.0.1:8787"
    reconnect_min: Duration = Field(default=0.5, gt=0)
    reconnect_max: Duration = Field(default=30.0, gt=0)

    @field_validator("local_api")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        # The local API has no auth: anything that can reach it can report usage.
        host, _ = split_host_port(value)
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError("must listen on a loopback address")
        return value

    @field_validator("lanes")
    @classmethod
    def _lanes_fit(cls, lanes: dict[Lane, int]) -> dict[Lane, int]:
        if any(n < 0 for n in lanes.values()):
            raise ValueError("lane slots must be >= 0")
        return lanes


def load_agent_config(path: str | Path) -> AgentConfig:
    """Read and validate ``path``; a ``ConfigError`` (file, field, reason) on the first problem."""
    data = read_config_file(Path(path))
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc, reason = tuple(error["loc"]), error["msg"].removeprefix("Value error, ")
        if loc and loc[-1] == "[key]":  # pydantic's marker for a bad mapping key
            loc, reason = loc[:-1], f"invalid name: {reason}"
        # Not chained: pydantic's message repeats input values, and the token is one.
        raise ConfigError(str(path), dotted(loc) or "(top level)", reason) from None
