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

from dispatcher import config as cfg


def with_operator_settings(
    config: cfg.DispatcherConfig,
    weights: Mapping[str, Mapping[str, float]],
    breakers: Mapping[str, Mapping[str, Any]],
) -> cfg.DispatcherConfig:
    """``config`` with persisted weights (routes still configured) and breaker thresholds."""
    routes = dict(config.routes)
    for route, backends in weights.items():
        if route in routes and backends:
            routes[route] = cfg.RouteSpec(
                backends=tuple(
                    cfg.WeightedBackend(name=name, weight=round(weight))
                    for name, weight in backends.items()
                )
            )
    agents = dict(config.agents)
    for agent, settings in breakers.items():
        spec = config.agent_spec(agent)
        agents[agent] = spec.model_copy(update={"breaker": cfg.BreakerSpec(**settings)})
    return config.model_copy(update={"routes": routes, "agents": agents})


def breaker_settings_dict(spec: cfg.BreakerSpec) -> dict[str, Any]:
    """What the durable ledger stores for one agent's thresholds (every field)."""
    return spec.model_dump(mode="json")
