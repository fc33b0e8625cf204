"""Configuration: defaults, loading, precedence, and one precise ConfigError per bad input."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from textwrap import dedent
from types import MappingProxyType
from typing import NamedTuple

import pydantic
import pytest

from dispatcher.config import (
    EXAMPLE_CONFIG_PATH,
    AgentSpec,
    DispatcherConfig,
    load_config,
    parse_duration,
    redact_url,
    split_host_port,
)
from dispatcher.errors import ConfigError

FULL_CONFIG = """\
server:
  listen: "[::]:50051"
  grace_period: 30s
  log_format: json
  log_level: WARNING
  metrics_listen: "0.0.0.0:9100"
hot_store:
  url: "rediss://:hot-secret@redis.internal:6380/2"
  call_timeout: 25ms
  connect_timeout: 1.5
durable:
  database_url: "postgresql+asyncpg://app:db-secret@db.internal:5432/ledger"
pools:
  - id: azure-openai/eastus2/gpt-4o
    tpm: 450000
    rpm: 2700
    mode: fixed_minute
    refund_unused: false
    family: azure-gpt-4o
  - id: bedrock/us-east-1/claude
    input_tpm: 400000
    output_tpm: 80000
    tpd: 50000000
    burst: 2m
    safety_factor: 0.8
    output_weight: 5
    failure_mode: closed
    static_share: 0.25
routes:
  chat-default:
    backends:
      - {name: llama3-local, weight: 90}
      - {name: gpt-4o, weight: 10}
backends:
  llama3-local: {agent: chat}
  gpt-4o: {agent: chat, pools: [azure-openai/eastus2/gpt-4o]}
agents:
  auditor:
    breaker:
      failure_rate: 0.1
      slow_call_rate: 0.5
      slow_call_duration: 10m
      window: 100
      min_calls: 20
      open_for: 15s
      max_open_for: 1h
      half_open_probes: 3
    fallback: auditor-basic
    maintenance_message: "Auditor is down."
    default_estimate: {input_tokens: 20000, max_output_tokens: 4000}
clusters:
  - {id: eu-1, pinned: true}
  - {id: us-2, forbidden: true}
  - {id: ap-3, weight: 40}
routing:
  heartbeat_interval: 2s
  stale_after_intervals: 4
  policy: least_outstanding
  panic: fail_closed
auth:
  operator_tokens:
    oncall: {token: op-secret-1, role: admin}
    grafana: {token: op-secret-2}
  agent_tokens:
    eu-1: agent-secret-1
tls:
  cert_file: $TMP/server.crt
  key_file: $TMP/server.key
  client_ca_file: $TMP/ca.crt
"""

SECRETS = ("hot-secret", "db-secret", "op-secret-1", "op-secret-2", "agent-secret-1")


def write_config(tmp_path: Path, text: str) -> Path:
    """Write ``text`` (``$TMP`` = tmp_path) as a config file, plus the TLS files it may name."""
    for name in ("server.crt", "server.key", "ca.crt"):
        (tmp_path / name).write_text("not checked here\n")
    path = tmp_path / "dispatcher.yaml"
    path.write_text(dedent(text).replace("$TMP", str(tmp_path)))
    return path


def test_no_file_and_no_environment_gives_the_embedded_defaults() -> None:
    config = load_config(env={})
    assert config == DispatcherConfig()
    assert config.server.listen == "127.0.0.1:50051"
    assert config.server.grace_period == 10.0
    assert (config.server.log_format, config.server.log_level) == ("console", "info")
    assert config.server.metrics_listen is None
    assert config.hot_store.url == "memory://"
    assert (config.hot_store.call_timeout, config.hot_store.connect_timeout) == (0.25, 3.0)
    assert config.durable.database_url == "sqlite+aiosqlite:///var/dispatcher.sqlite3"
    assert (config.pools, config.routes, config.backends, config.clusters) == ((), {}, {}, ())
    assert config.routing.policy == "p2c"
    assert config.routing.stale_after == 15.0
    assert not config.tls.enabled


@pytest.mark.parametrize(
    "text", ["", "# only a comment\n", "server:\n  # listen: x\ntls:\n"], ids=repr
)
def test_empty_file_or_empty_sections_give_defaults(tmp_path: Path, text: str) -> None:
    assert load_config(write_config(tmp_path, text), env={}) == DispatcherConfig()


def test_full_config_loads_every_field_and_round_trips(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, FULL_CONFIG), env={})

    assert config.server.listen == "[::]:50051"
    assert config.server.grace_period == 30.0
    assert config.server.log_level == "warning"
    assert config.hot_store.call_timeout == 0.025
    assert config.hot_store.connect_timeout == 1.5
    azure, bedrock = config.pools
    assert azure.limits == {"rpm": 2700.0, "tpm": 450000.0}
    assert (azure.mode, azure.refund_unused, azure.quota_family) == (
        "fixed_minute",
        False,
        "azure-gpt-4o",
    )
    assert bedrock.limits == {"input_tpm": 400000.0, "output_tpm": 80000.0, "tpd": 5e7}
    assert (bedrock.burst, bedrock.safety_factor, bedrock.output_weight) == (120.0, 0.8, 5.0)
    assert (bedrock.failure_mode, bedrock.static_share) == ("closed", 0.25)
    assert bedrock.quota_family == "bedrock/us-east-1/claude"
    weights = [(b.name, b.weight) for b in config.routes["chat-default"].backends]
    assert weights == [("llama3-local", 90), ("gpt-4o", 10)]
    assert config.backends["gpt-4o"].pools == ("azure-openai/eastus2/gpt-4o",)
    auditor = config.agents["auditor"]
    assert auditor.breaker.slow_call_duration == 600.0
    assert (auditor.breaker.open_for, auditor.breaker.max_open_for) == (15.0, 3600.0)
    assert auditor.fallback == "auditor-basic"
    assert auditor.default_estimate.input_tokens == 20000
    assert [(c.id, c.pinned, c.forbidden, c.weight) for c in config.clusters] == [
        ("eu-1", True, False, None),
        ("us-2", False, True, None),
        ("ap-3", False, False, 40),
    ]
    assert config.routing.stale_after == 8.0
    assert config.routing.panic == "fail_closed"
    assert config.auth.operator_tokens["oncall"].token.get_secret_value() == "op-secret-1"
    assert config.auth.operator_tokens["grafana"].role == "read"
    assert config.auth.agent_tokens["eu-1"].get_secret_value() == "agent-secret-1"
    assert config.tls.enabled
    assert config.tls.client_ca_file == tmp_path / "ca.crt"

    assert DispatcherConfig.model_validate(config.model_dump()) == config


def test_example_config_loads_and_shows_every_section() -> None:
    config = load_config(EXAMPLE_CONFIG_PATH, env={})
    text = EXAMPLE_CONFIG_PATH.read_text()
    for section in DispatcherConfig.model_fields:
        assert f"\n{section}:" in text, f"example lacks section {section!r}"
    assert config.hot_store.url == "memory://"
    assert {pool.quota_family for pool in config.pools} >= {"azure-gpt-4o"}
    assert config.agents["auditor"].fallback == "auditor-basic"


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        server: {listen: "10.0.0.1:1", log_level: debug, log_format: json}
        hot_store: {url: "redis://file:6379/0"}
        """,
    )
    env = {
        "DISPATCHER_LISTEN": "10.0.0.2:2",
        "DISPATCHER_LOG_LEVEL": "error",
        "DISPATCHER_DATABASE_URL": "postgresql+asyncpg://env-db/x",
    }
    overrides: dict[str, object] = {"server.listen": "127.0.0.1:0"}

    config = load_config(path, env=env, overrides=overrides)

    assert config.server.listen == "127.0.0.1:0"  # flag > env > file
    assert config.server.log_level == "error"  # env > file
    assert config.server.log_format == "json"  # file > default
    assert config.hot_store.url == "redis://file:6379/0"  # file > default
    assert config.durable.database_url == "postgresql+asyncpg://env-db/x"  # env > default
    assert config.routing.heartbeat_interval == 5.0  # default


def test_every_documented_environment_variable_sets_its_field() -> None:
    env = {
        "DISPATCHER_LISTEN": "0.0.0.0:50051",
        "DISPATCHER_REDIS_URL": "unix:///run/redis.sock",
        "DISPATCHER_DATABASE_URL": "sqlite+aiosqlite://",
        "DISPATCHER_LOG_FORMAT": "json",
        "DISPATCHER_LOG_LEVEL": "DEBUG",
        "DISPATCHER_METRICS_LISTEN": "localhost:9100",
    }
    config = load_config(env=env)
    assert config.server.listen == "0.0.0.0:50051"
    assert config.hot_store.url == "unix:///run/redis.sock"
    assert config.durable.database_url == "sqlite+aiosqlite://"
    assert (config.server.log_format, config.server.log_level) == ("json", "debug")
    assert config.server.metrics_listen == "localhost:9100"


def test_config_file_comes_from_environment_unless_a_path_is_given(tmp_path: Path) -> None:
    from_env = write_config(tmp_path, "routing: {policy: round_robin}\n")
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text("routing: {policy: least_outstanding}\n")
    env = {"DISPATCHER_CONFIG": str(from_env)}
    assert load_config(env=env).routing.policy == "round_robin"
    assert load_config(explicit, env=env).routing.policy == "least_outstanding"


def test_empty_variables_and_none_flags_count_as_unset() -> None:
    config = load_config(env={"DISPATCHER_LISTEN": ""}, overrides={"server.listen": None})
    assert config.server.listen == "127.0.0.1:50051"


def test_secrets_never_appear_in_repr_or_str(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, FULL_CONFIG), env={})
    for text in (repr(config), str(config), repr(config.auth), repr(config.hot_store)):
        for secret in SECRETS:
            assert secret not in text
    assert "rediss://:***@redis.internal:6380/2" in repr(config)
    assert "db.internal" in repr(config.durable)


def test_config_is_frozen() -> None:
    config = load_config(env={})
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.server.listen = "0.0.0.0:1"  # type: ignore[misc]


def test_agent_spec_falls_back_from_version_to_name_to_defaults() -> None:
    auditor = AgentSpec(fallback="auditor-basic")
    pinned = AgentSpec(fallback="auditor@16.3")
    config = DispatcherConfig(agents={"auditor": auditor, "auditor@16.4": pinned})
    assert config.agent_spec("auditor@16.4") is pinned
    assert config.agent_spec("auditor@17.0") is auditor
    assert config.agent_spec("chat") == AgentSpec()


DURATIONS = [("250ms", 0.25), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1.5m", 90.0)]
PLAIN_SECONDS = [("10", 10.0), (7, 7.0), (0.5, 0.5), (" 2s ", 2.0)]


@pytest.mark.parametrize(("text", "seconds"), [*DURATIONS, *PLAIN_SECONDS])
def test_durations_parse_to_seconds(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("address", "parts"),
    [
        ("127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("[::1]:0", ("::1", 0)),
        ("dispatcher.internal:443", ("dispatcher.internal", 443)),
    ],
)
def test_host_port_splits(address: str, parts: tuple[str, int]) -> None:
    assert split_host_port(address) == parts


@pytest.mark.parametrize("address", ["50051", ":50051", "host:", "host:70000", "::1:5", "a_b:1"])
def test_host_port_rejects(address: str) -> None:
    with pytest.raises(ValueError, match=r"HOST:PORT|port|address"):
        split_host_port(address)


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("redis://user:pw@h:6379/0") == "redis://user:***@h:6379/0"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


FILE = "<the config file>"
MISSING = "<no such file>"


class Bad(NamedTuple):
    """One bad input and the single ConfigError it must produce."""

    name: str
    yaml: str
    field: str
    reason: str
    source: str = FILE
    env: Mapping[str, str] = MappingProxyType({})
    overrides: Mapping[str, object] = MappingProxyType({})


POOLS_AB = "pools: [{id: a, tpm: 10}, {id: b, tpm: 20}]\n"
ROUTE = "routes:\n  chat-default:\n    backends: {}\n"

BAD_INPUTS = [
    Bad("unknown field", "server:\n  lisen: x\n", "server.lisen", "unknown field"),
    Bad("unknown section", "servers: {}\n", "servers", "unknown field"),
    Bad(
        "external consumer on a memory hot store",
        "durable: {consumer: external}\n",
        "durable.consumer",
        "needs a Redis hot store",
    ),
    Bad(
        "wrong type",
        "pools: [{id: a, tpm: abc}]\n",
        "pools[0].tpm",
        "expected a number, got 'abc'",
    ),
    Bad("bool as number", "pools: [{id: a, rpm: yes}]\n", "pools[0].rpm", "got true"),
    Bad("negative limit", "pools: [{id: a, tpm: 1}, {id: b, tpm: -5}]\n", "pools[1].tpm", ">= 0"),
    Bad("pool without limit", "pools: [{id: a}]\n", "pools[0]", "at least one of rpm"),
    Bad(
        "safety factor above 1",
        "pools: [{id: a, rpm: 1, safety_factor: 1.5}]\n",
        "pools[0].safety_factor",
        "must be <= 1",
    ),
    Bad(
        "duplicate pool id",
        "pools:\n  - {id: a, tpm: 1}\n  - {id: b, tpm: 1}\n  - {id: a, rpm: 1}\n",
        "pools[2].id",
        "duplicate pool id 'a'",
    ),
    Bad(
        "duplicate cluster id",
        "clusters: [{id: eu-1}, {id: us-2}, {id: eu-1}]\n",
        "clusters[2].id",
        "duplicate cluster id 'eu-1'",
    ),
    Bad(
        "pinned and forbidden",
        "clusters: [{id: eu-1, pinned: true, forbidden: true}]\n",
        "clusters[0].forbidden",
        "both pinned and forbidden",
    ),
    Bad("missing file", MISSING, "(file)", "file not found"),
    Bad(
        "invalid YAML",
        "server:\n  listen: x\n  grace: [1, 2\n",
        "(file)",
        "invalid YAML at line 4",
    ),
    Bad(
        "duplicate YAML key",
        "pools:\n  - id: a\n    tpm: 1\n    tpm: 2\n",
        "(file)",
        "invalid YAML at line 4: duplicate key 'tpm'",
    ),
    Bad("top level not a mapping", "- a\n- b\n", "(top level)", "got a list"),
    Bad(
        "weights all zero",
        ROUTE.replace("{}", "[{name: x, weight: 0}, {name: y, weight: 0}]"),
        "routes.chat-default.backends",
        "weights must not all be zero",
    ),
    Bad(
        "negative weight",
        ROUTE.replace("{}", "[{name: x, weight: -1}]"),
        "routes.chat-default.backends[0].weight",
        "must be >= 0",
    ),
    Bad(
        "fractional weight",
        ROUTE.replace("{}", "[{name: x, weight: 0.5}]"),
        "routes.chat-default.backends[0].weight",
        "whole number",
    ),
    Bad(
        "duplicate backend in a route",
        ROUTE.replace("{}", "[{name: x, weight: 1}, {name: x, weight: 2}]"),
        "routes.chat-default.backends[1].name",
        "duplicate backend 'x'",
    ),
    Bad(
        "route without backends", ROUTE.replace("{}", "[]"), "routes.chat-default.backends", "empty"
    ),
    Bad(
        "unknown pool in a backend",
        POOLS_AB + "backends:\n  gpt-4o: {pools: [a, nope]}\n",
        "backends.gpt-4o.pools[1]",
        "unknown pool 'nope'",
    ),
    Bad(
        "unknown backend in a route",
        ROUTE.replace("{}", "[{name: ghost, weight: 1}]") + "backends: {real: {}}\n",
        "routes.chat-default.backends[0].name",
        "unknown backend 'ghost'",
    ),
    Bad(
        "bad duration",
        "routing: {heartbeat_interval: 5 minutes}\n",
        "routing.heartbeat_interval",
        "expected a duration such as 250ms, 30s, 5m or 1h, got '5 minutes'",
    ),
    Bad(
        "negative duration",
        "agents: {auditor: {breaker: {open_for: -1s}}}\n",
        "agents.auditor.breaker.open_for",
        "must be >= 0",
    ),
    Bad(
        "zero duration where positive is needed",
        "hot_store: {call_timeout: 0ms}\n",
        "hot_store.call_timeout",
        "must be > 0",
    ),
    Bad(
        "min_calls above window",
        'agents: {"auditor@16.4": {breaker: {window: 10, min_calls: 50}}}\n',
        'agents["auditor@16.4"].breaker.min_calls',
        "must be <= window (10)",
    ),
    Bad(
        "unknown literal",
        "server: {log_format: xml}\n",
        "server.log_format",
        "expected 'json' or 'console', got 'xml'",
    ),
    Bad("bad listen address", 'server: {listen: "localhost"}\n', "server.listen", "HOST:PORT"),
    Bad(
        "unsupported database URL",
        'durable: {database_url: "mysql://u:pw@db/x"}\n',
        "durable.database_url",
        "unsupported URL scheme 'mysql'",
    ),
    Bad("TLS file missing", "tls: {cert_file: /nonexistent/x.crt}\n", "tls.cert_file", "not found"),
    Bad(
        "TLS key without certificate",
        "tls: {key_file: $TMP/server.key}\n",
        "tls.cert_file",
        "required when key_file is set",
    ),
    Bad(
        "secret of the wrong type is not echoed",
        "auth: {agent_tokens: {eu-1: 12345}}\n",
        "auth.agent_tokens.eu-1",
        "expected a string",
    ),
    Bad(
        "shared token",
        "auth:\n  operator_tokens: {ops: {token: s3cr3t}}\n  agent_tokens: {eu-1: s3cr3t}\n",
        "auth.agent_tokens.eu-1",
        "same token as operator_tokens.ops",
    ),
    Bad(
        "bad listen from environment",
        "",
        "server.listen",
        "expected HOST:PORT, got 'nope' (from DISPATCHER_LISTEN)",
        source="environment",
        env={"DISPATCHER_LISTEN": "nope"},
    ),
    Bad(
        "bad Redis URL from environment",
        "",
        "hot_store.url",
        "unsupported URL scheme 'http'",
        source="environment",
        env={"DISPATCHER_REDIS_URL": "http://redis"},
    ),
    Bad(
        "bad flag",
        'server: {listen: "127.0.0.1:1"}\n',
        "server.listen",
        "port must be 0-65535",
        source="command line",
        overrides={"server.listen": "127.0.0.1:99999"},
    ),
    Bad(
        "unknown flag field",
        "",
        "server.lisen",
        "unknown field",
        source="command line",
        overrides={"server.lisen": "127.0.0.1:0"},
    ),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[case.name for case in BAD_INPUTS])
def test_bad_input_raises_one_config_error_naming_source_field_and_reason(
    tmp_path: Path, case: Bad
) -> None:
    path = tmp_path / "missing.yaml" if case.yaml == MISSING else write_config(tmp_path, case.yaml)

    with pytest.raises(ConfigError) as raised:
        load_config(path, env=case.env, overrides=case.overrides)

    error = raised.value
    assert error.source == (str(path) if case.source == FILE else case.source)
    assert error.field == case.field
    assert case.reason in error.reason
    assert str(error) == f"{error.source}: {error.field}: {error.reason}"
    for secret in ("12345", "s3cr3t", "pw@"):
        assert secret not in str(error)


def test_cross_field_error_caused_by_a_flag_names_the_command_line(tmp_path: Path) -> None:
    cert = write_config(tmp_path, "").parent / "server.crt"
    with pytest.raises(ConfigError) as raised:
        load_config(env={}, overrides={"tls.cert_file": str(cert)})
    assert (raised.value.source, raised.value.field) == ("command line", "tls.key_file")


def test_only_the_first_of_several_problems_is_reported(tmp_path: Path) -> None:
    path = write_config(tmp_path, "server: {listen: nope}\nrouting: {policy: random}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    assert raised.value.field == "server.listen"
