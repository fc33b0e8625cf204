"""Traffic sections: quota pools, routes, backends and agents (seed values, DESIGN §2a).

The config file seeds these; at run time the durable ledger and ``dispatchctl`` may change
limits, weights and breaker thresholds, so code reads them from the ledger after start-up.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dispatcher.config.sections import Name, Section
from dispatcher.config.values import Count, Duration, Number, config_problem

LIMIT_DIMENSIONS = ("rpm", "tpm", "input_tpm", "output_tpm", "tpd")

DEFAULT_MAINTENANCE_MESSAGE = (
    "This agent is temporarily unavailable for maintenance. Please try again in a few minutes."
)


class PoolSpec(Section):
    """One provider limit, e.g. ``azure-openai/eastus2/gpt-4o`` (DESIGN §2, §7)."""

    id: Name
    rpm: Number | None = Field(default=None, ge=0)
    tpm: Number | None = Field(default=None, ge=0)
    input_tpm: Number | None = Field(default=None, ge=0)
    output_tpm: Number | None = Field(default=None, ge=0)
    tpd: Number | None = Field(default=None, ge=0)
    mode: Literal["token_bucket", "fixed_minute"] = "token_bucket"
    # Seconds of refill a token bucket may hold: 60 lets a quiet pool spend a full minute at once.
    burst: Duration = Field(default=60.0, gt=0)
    safety_factor: Number = Field(default=0.9, gt=0, le=1)
    output_weight: Number = Field(default=1.0, gt=0)
    refund_unused: bool = True
    failure_mode: Literal["static_share", "closed", "open"] = "static_share"
    # Fraction of capacity all replicas together may admit from local buckets without Redis.
    static_share: Number = Field(default=0.5, gt=0, le=1)
    family: Name | None = None

    @model_validator(mode="after")
    def _has_a_limit(self) -> PoolSpec:
        if not self.limits:
            raise config_problem("set at least one of " + ", ".join(LIMIT_DIMENSIONS))
        return self

    @property
    def limits(self) -> dict[str, float]:
        """The dimensions this pool limits, e.g. ``{"rpm": 2700.0, "tpm": 450000.0}``."""
        return {dim: value for dim in LIMIT_DIMENSIONS if (value := getattr(self, dim)) is not None}

    @property
    def quota_family(self) -> str:
        """The Redis hash tag of this pool's keys: ``family``, else the pool's own id."""
        return self.family or self.id


class WeightedBackend(Section):
    """One backend of a route and its share of the route's traffic."""

    name: Name
    weight: Count = Field(default=1, ge=0)


class RouteSpec(Section):
    """What a caller asks for (``chat-default``), split by weight over backends."""

    backends: tuple[WeightedBackend, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _backends_usable(self) -> RouteSpec:
        seen: set[str] = set()
        for index, backend in enumerate(self.backends):
            if backend.name in seen:
                raise config_problem(
                    f"duplicate backend {backend.name!r}", "backends", index, "name"
                )
            seen.add(backend.name)
        if not any(backend.weight for backend in self.backends):
            raise config_problem("weights must not all be zero", "backends")
        return self


class BackendSpec(Section):
    """A model or deployment behind routes: the agent it runs and the quota pools it draws on."""

    agent: Name | None = None
    pools: tuple[Name, ...] = ()

    @model_validator(mode="after")
    def _pools_unique(self) -> BackendSpec:
        for index, pool_id in enumerate(self.pools):
            if pool_id in self.pools[:index]:
                raise config_problem(f"duplicate pool {pool_id!r}", "pools", index)
        return self


class BreakerSpec(Section):
    """Circuit-breaker thresholds per agent version, resilience4j semantics (DESIGN §6)."""

    failure_rate: Number = Field(default=0.05, gt=0, le=1)
    slow_call_rate: Number = Field(default=1.0, gt=0, le=1)
    slow_call_duration: Duration = Field(default=60.0, gt=0)
    window: Count = Field(default=200, ge=1)
    min_calls: Count = Field(default=50, ge=1)
    open_for: Duration = Field(default=30.0, gt=0)
    max_open_for: Duration = Field(default=300.0, gt=0)
    half_open_probes: Count = Field(default=5, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> BreakerSpec:
        # A window smaller than min_calls never holds enough calls to trip.
        if self.min_calls > self.window:
            raise config_problem(f"must be <= window ({self.window})", "min_calls")
        if self.max_open_for < self.open_for:
            raise config_problem(f"must be >= open_for ({self.open_for:g}s)", "max_open_for")
        return self


class EstimateSpec(Section):
    """Token estimate used when a Route request carries none and the ledger has no history."""

    input_tokens: Count = Field(default=1000, ge=0)
    max_output_tokens: Count = Field(default=1000, ge=0)


class AgentSpec(Section):
    """Per-agent breaker, fallback chain and estimate. Unlisted agents get the defaults."""

    breaker: BreakerSpec = Field(default_factory=BreakerSpec)
    fallback: Name | None = None
    maintenance_message: Name = DEFAULT_MAINTENANCE_MESSAGE
    default_estimate: EstimateSpec = Field(default_factory=EstimateSpec)
