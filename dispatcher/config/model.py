"""``DispatcherConfig``: every section, and the checks that span sections."""

from __future__ import annotations

from pydantic import Field, model_validator

from dispatcher.config.sections import (
    AuthConfig,
    ClusterOverride,
    DurableConfig,
    HotStoreConfig,
    Name,
    RelayConfig,
    RoutingConfig,
    Section,
    ServerConfig,
    TlsConfig,
)
from dispatcher.config.traffic import AgentSpec, BackendSpec, PoolSpec, RouteSpec
from dispatcher.config.values import config_problem


class DispatcherConfig(Section):
    """The whole configuration of a dispatcher replica. All defaults = the embedded system."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    hot_store: HotStoreConfig = Field(default_factory=HotStoreConfig)
    durable: DurableConfig = Field(default_factory=DurableConfig)
    pools: tuple[PoolSpec, ...] = ()
    routes: dict[Name, RouteSpec] = Field(default_factory=dict)
    backends: dict[Name, BackendSpec] = Field(default_factory=dict)
    agents: dict[Name, AgentSpec] = Field(default_factory=dict)
    clusters: tuple[ClusterOverride, ...] = ()
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    relay: RelayConfig = Field(default_factory=RelayConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    tls: TlsConfig = Field(default_factory=TlsConfig)

    @model_validator(mode="after")
    def _references(self) -> DispatcherConfig:
        _check_unique_ids("pool", "pools", [pool.id for pool in self.pools])
        _check_unique_ids("cluster", "clusters", [cluster.id for cluster in self.clusters])
        pool_ids = {pool.id for pool in self.pools}
        for name, backend in self.backends.items():
            for index, pool_id in enumerate(backend.pools):
                if pool_id not in pool_ids:
                    raise config_problem(
                        f"unknown pool {pool_id!r}", "backends", name, "pools", index
                    )
        # Backends may be left out entirely (routes naming models directly); once any are
        # declared, a route naming an undeclared one is a typo.
        if self.backends:
            self._check_route_backends()
        for name, agent in self.agents.items():
            if agent.fallback == name:
                raise config_problem("must name another agent", "agents", name, "fallback")
        if self.auth.operator_certificates and self.tls.client_ca_file is None:
            raise config_problem(
                "client certificates need mutual TLS (tls.client_ca_file)",
                "auth",
                "operator_certificates",
            )
        if self.durable.consumer == "external" and self.hot_store.url.startswith("memory:"):
            raise config_problem(
                "an external consumer needs a Redis hot store (memory:// lives in one process)",
                "durable",
                "consumer",
            )
        return self

    def _check_route_backends(self) -> None:
        for route_name, route in self.routes.items():
            for index, backend in enumerate(route.backends):
                if backend.name not in self.backends:
                    raise config_problem(
                        f"unknown backend {backend.name!r}",
                        *("routes", route_name, "backends", index, "name"),
                    )

    def agent_spec(self, agent: str) -> AgentSpec:
        """Settings for ``agent`` or ``agent@version``: exact entry, bare name, else defaults."""
        bare = agent.partition("@")[0]
        return self.agents.get(agent) or self.agents.get(bare) or AgentSpec()

    def pool(self, pool_id: str) -> PoolSpec | None:
        """The configured pool with this id, if any."""
        return next((pool for pool in self.pools if pool.id == pool_id), None)


def _check_unique_ids(kind: str, field: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for index, item_id in enumerate(ids):
        if item_id in seen:
            raise config_problem(f"duplicate {kind} id {item_id!r}", field, index, "id")
        seen.add(item_id)
