"""The regional agents, their simulated workers and Prometheus in ``infra/compose.yaml``: each
agent reaches a replica with a token it accepts, each simulator drives its own agent's local
API, and Prometheus scrapes every replica's metrics port."""

from __future__ import annotations

import pytest

from dispatcher.config import DispatcherConfig
from tests.infra import compose as c
from tests.infra.files import PROMETHEUS_DIR, host_port, load_yaml, port_of

AGENTS = c.project_services("run", script="regional-agent")
SIMULATORS = c.project_services("simulate-workers", script="regional-agent")


def replica_config() -> DispatcherConfig:
    """The replicas' shared config (test_compose.py checks that they share it)."""
    return c.config_of(c.dispatcher_services("serve")[0])


def test_three_agents_with_simulated_workers() -> None:
    assert len(AGENTS) == 3, AGENTS
    assert len(SIMULATORS) == len(AGENTS), "every agent needs its simulated workers"


@pytest.mark.parametrize("name", AGENTS)
def test_agent_config_loads_through_the_agent_loader(name: str) -> None:
    c.agent_config_of(name)  # raises ConfigError naming the file, field and reason


def test_clusters_are_distinct_and_of_unequal_capacity() -> None:
    configs = [c.agent_config_of(name) for name in AGENTS]
    ids = [cfg.cluster_id for cfg in configs]
    assert len(set(ids)) == len(ids), f"two agents report for one cluster: {ids}"
    slots = [cfg.slots for cfg in configs]
    assert len(set(slots)) == len(slots), f"capacities should differ to show routing: {slots}"


@pytest.mark.parametrize("name", AGENTS)
def test_agent_reaches_the_replicas_grpc_port(name: str) -> None:
    host, port = host_port(c.agent_config_of(name).dispatcher)
    reached = [n for n in c.services() if host in c.network_names(n)]
    assert reached, f"{name}: no service or alias is called {host}"
    for target in reached:
        assert target in c.dispatcher_services("serve"), f"{host} also names {target}"
        assert port == port_of(c.config_of(target).server.listen), f"{name} -> {target}"


@pytest.mark.parametrize("name", AGENTS)
def test_agent_token_is_the_one_the_dispatcher_expects(name: str) -> None:
    agent = c.agent_config_of(name)
    tokens = replica_config().auth.agent_tokens
    if not tokens:
        assert agent.token is None, "the dispatcher authenticates no agent"
        return
    assert agent.cluster_id in tokens, f"no auth.agent_tokens entry for {agent.cluster_id}"
    assert agent.token is not None, f"{name} sends no token"
    assert agent.token.get_secret_value() == tokens[agent.cluster_id].get_secret_value()


@pytest.mark.parametrize("name", AGENTS)
def test_agent_serves_backends_and_pools_the_dispatcher_knows(name: str) -> None:
    agent, dispatcher = c.agent_config_of(name), replica_config()
    assert set(agent.backends) <= set(dispatcher.backends), "unknown backend: never routed to"
    assert set(agent.pool_ids) <= {pool.id for pool in dispatcher.pools}


@pytest.mark.parametrize("name", AGENTS)
def test_agent_outbox_is_on_a_volume(name: str) -> None:
    # Unacked usage reports live in the outbox until the dispatcher confirms them durable.
    outbox = c.agent_config_of(name).outbox
    targets = {m.target for m in c.mounts(c.services()[name]) if not m.is_bind}
    assert any(t == outbox.parent or t in outbox.parents for t in targets), outbox


def agent_of(simulator: str) -> str:
    mode = str(c.services()[simulator].get("network_mode", ""))
    kind, _, agent = mode.partition(":")
    # The local API listens on loopback only: the workers must share the agent's network.
    assert kind == "service", f"{simulator} must use network_mode: service:<agent>"
    assert agent in AGENTS, f"{simulator} shares the network of {agent}, not an agent"
    return agent


@pytest.mark.parametrize("name", SIMULATORS)
def test_simulator_drives_its_own_agents_local_api(name: str) -> None:
    agent = c.agent_config_of(agent_of(name))
    args = c.invocation(name).args
    assert host_port(args.api) == host_port(agent.local_api)


@pytest.mark.parametrize("name", SIMULATORS)
def test_simulator_runs_versions_and_pools_of_its_cluster(name: str) -> None:
    agent = c.agent_config_of(agent_of(name))
    args = c.invocation(name).args
    assert set(args.versions) <= set(agent.versions), "tasks of versions the cluster lacks"
    assert set(args.pools) <= set(agent.pool_ids), "provider headers for pools it lacks"


def test_each_agent_has_one_simulator() -> None:
    assert sorted(agent_of(name) for name in SIMULATORS) == sorted(AGENTS)


def prometheus_config_path() -> str:
    names = [n for n, s in c.services().items() if str(s.get("image", "")).startswith("prom/")]
    assert len(names) == 1, f"expected one prometheus service, found {names}"
    return str(c.file_view(c.services()[names[0]]).host_path("/etc/prometheus/prometheus.yml"))


def test_prometheus_mounts_the_infra_scrape_config() -> None:
    assert prometheus_config_path() == str(PROMETHEUS_DIR.resolve() / "prometheus.yml")


def scrape_targets() -> set[tuple[str, int]]:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    return {
        host_port(target)
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }


def test_prometheus_scrapes_every_replicas_metrics_port() -> None:
    expected = set()
    for name in c.dispatcher_services("serve"):
        metrics = c.config_of(name).server.metrics_listen
        assert metrics, f"{name} serves no metrics"
        expected.add((name, port_of(metrics)))
    assert scrape_targets() == expected
