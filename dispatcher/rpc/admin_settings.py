"""SetWeights / SetBreaker: checking an operator's change and its protobuf shape.

Both change what the config file seeded; ``router.settings`` applies the persisted result.
Every refusal is INVALID_ARGUMENT (or NOT_FOUND) naming the field, before anything is
written, so a bad change leaves the server as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import ValidationError

from dispatcher import config as cfg
from dispatcher.errors import InvalidArgument, NotFound
from dispatcher.rpc import convert
from dispatcher.rpc.status import duration_from_seconds
from dispatcher.v1 import admin_pb2

BREAKER_COUNTS = ("window", "min_calls", "half_open_probes")
BREAKER_RATES = ("failure_rate", "slow_call_rate")
DurationField = Literal["slow_call_duration", "open_for", "max_open_for"]
BREAKER_DURATIONS: tuple[DurationField, ...] = ("slow_call_duration", "open_for", "max_open_for")


def checked_weights(
    config: cfg.DispatcherConfig, route: str, weights: Sequence[admin_pb2.BackendWeight]
) -> dict[str, float]:
    """The route's new weights; its backends not named are removed from it."""
    spec = config.routes.get(route)
    if spec is None:
        raise NotFound("route", route or "(empty route)")
    if not weights:
        raise InvalidArgument("weights", "name at least one backend")
    allowed = set(config.backends) or {b.name for b in spec.backends}
    checked: dict[str, float] = {}
    for index, item in enumerate(weights):
        field = f"weights[{index}].backend"
        name = convert.required_id(item.backend, field)
        if name in checked:
            raise InvalidArgument(field, f"duplicate backend {name!r}")
        if name not in allowed:
            raise InvalidArgument(field, f"unknown backend {name!r} for route {route!r}")
        checked[name] = float(item.weight)
    if not any(checked.values()):
        raise InvalidArgument("weights", "must not all be zero")
    return checked


def weights_pb(route: str, spec: cfg.RouteSpec) -> admin_pb2.SetWeightsResponse:
    return admin_pb2.SetWeightsResponse(
        route=route,
        weights=[admin_pb2.BackendWeight(backend=b.name, weight=b.weight) for b in spec.backends],
    )


def known_agents(config: cfg.DispatcherConfig, seen: Iterable[str]) -> set[str]:
    """Agents an operator may set thresholds for: configured, behind a backend, or ``seen``
    (agent versions clusters announce or breakers exist for), so a typo is NOT_FOUND."""
    agents = set(config.agents)
    agents |= {b.agent for b in config.backends.values() if b.agent}
    agents |= {key.partition("@")[0] for key in seen}
    return agents


def merged_breaker(
    current: cfg.BreakerSpec, settings: admin_pb2.BreakerSettings
) -> cfg.BreakerSpec:
    """``current`` with the fields ``settings`` sets (zero / unset keeps the current one)."""
    changes: dict[str, Any] = {}
    for name in (*BREAKER_COUNTS, *BREAKER_RATES):
        if value := getattr(settings, name):
            changes[name] = value
    for name in BREAKER_DURATIONS:
        if settings.HasField(name):
            changes[name] = convert.seconds_of(getattr(settings, name), f"settings.{name}")
    try:
        return cfg.BreakerSpec(**{**current.model_dump(), **changes})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or _field_of(error)
        raise InvalidArgument(f"settings.{where}", error["msg"]) from None


def _field_of(error: Any) -> str:
    """A cross-field check names its field in the error's context (``config_problem``)."""
    at = (error.get("ctx") or {}).get("at") or ()
    return ".".join(str(part) for part in at) or "breaker"


def breaker_settings_pb(agent: str, spec: cfg.BreakerSpec) -> admin_pb2.BreakerSettings:
    return admin_pb2.BreakerSettings(
        agent=agent,
        failure_rate=spec.failure_rate,
        slow_call_rate=spec.slow_call_rate,
        slow_call_duration=duration_from_seconds(spec.slow_call_duration),
        window=spec.window,
        min_calls=spec.min_calls,
        open_for=duration_from_seconds(spec.open_for),
        max_open_for=duration_from_seconds(spec.max_open_for),
        half_open_probes=spec.half_open_probes,
    )
