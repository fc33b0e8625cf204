"""Operator settings over the config file: route weights and breaker thresholds.

``dispatchctl weights set`` / ``breakers set`` write them to the durable ledger (the source
of truth, DESIGN §2a); every replica reads them back on a loop of one heartbeat interval and
applies them to its engine, so a change reaches every replica within one heartbeat and
outlives restarts. The config file stays the seed: a route or agent the operator never
touched keeps its configured values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from dispatcher import config as cfg
from dispatcher.logs import get_logger

log = get_logger(__name__)


def with_operator_settings(
    config: cfg.DispatcherConfig,
    weights: Mapping[str, Mapping[str, float]],
    breakers: Mapping[str, Mapping[str, Any]],
) -> cfg.DispatcherConfig:
    """``config`` with persisted weights (routes still configured) and breaker thresholds."""
    routes = dict(config.routes)
    for route, backends in weights.items():
        if route in routes and backends:
            try:
                routes[route] = route_spec(config, backends)
            except (ValidationError, ValueError) as exc:  # e.g. a backend since removed
                log.warning("stored weights skipped", route=route, reason=str(exc))
    agents = dict(config.agents)
    for agent, settings in breakers.items():
        try:
            breaker = cfg.BreakerSpec(**settings)
        except (ValidationError, TypeError) as exc:
            log.warning("stored breaker settings skipped", agent=agent, reason=str(exc))
            continue
        # The bare agent and any version the config lists apart (agent_spec prefers those).
        for name in [agent, *(n for n in config.agents if n.startswith(f"{agent}@"))]:
            agents[name] = config.agent_spec(name).model_copy(update={"breaker": breaker})
    return config.model_copy(update={"routes": routes, "agents": agents})


def route_spec(config: cfg.DispatcherConfig, backends: Mapping[str, float]) -> cfg.RouteSpec:
    """Stored weights as a route, if every backend is still configured (when any are)."""
    unknown = sorted(set(backends) - set(config.backends)) if config.backends else []
    if unknown:
        raise ValueError(f"backends no longer configured: {unknown}")
    return cfg.RouteSpec(
        backends=tuple(
            cfg.WeightedBackend(name=name, weight=round(weight))
            for name, weight in backends.items()
        )
    )


def breaker_settings_dict(spec: cfg.BreakerSpec) -> dict[str, Any]:
    """What the durable ledger stores for one agent's thresholds (every field)."""
    return spec.model_dump(mode="json")
