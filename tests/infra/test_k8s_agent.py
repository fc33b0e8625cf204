"""The regional agent in ``infra/k8s/``: its config loads, it reaches the dispatcher Service
with the token the dispatcher expects, and its simulated workers share its pod."""

from __future__ import annotations

from pathlib import Path

import pytest

from regional_agent.config import AgentConfig
from tests.infra import kube as k
from tests.infra.commands import agent_config
from tests.infra.files import host_port


def the_agent() -> tuple[k.Obj, k.Obj]:
    (found,) = k.running("regional-agent", "run")
    return found


def loaded_agent(tmp_path: Path) -> AgentConfig:
    workload, container = the_agent()
    files = k.pod_files(workload, tmp_path / "agent")(container)
    return agent_config(k.invocation(container), files)


def service_names(service: k.Obj) -> set[str]:
    """The DNS names of a Service from a pod in the same namespace."""
    name, namespace = k.name_of(service), k.kustomization()["namespace"]
    return {name, f"{name}.{namespace}", f"{name}.{namespace}.svc"} | {
        f"{name}.{namespace}.svc.cluster.local"
    }


def test_agent_config_loads_through_the_agent_loader(tmp_path: Path) -> None:
    loaded_agent(tmp_path)


def test_agent_reaches_the_dispatcher_services_grpc_port(tmp_path: Path) -> None:
    host, port = host_port(loaded_agent(tmp_path).dispatcher)
    service = k.find("Service", "dispatcher")
    assert host in service_names(service), f"{host} is not the dispatcher Service"
    (grpc,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
    assert port == grpc["port"]


def test_agent_token_is_the_one_the_dispatcher_expects(tmp_path: Path) -> None:
    agent = loaded_agent(tmp_path)
    tokens = k.replica_config(tmp_path / "dispatcher").auth.agent_tokens
    assert agent.cluster_id in tokens, f"no auth.agent_tokens entry for {agent.cluster_id}"
    assert agent.token is not None, "the agent sends no token"
    assert agent.token.get_secret_value() == tokens[agent.cluster_id].get_secret_value()


def test_agent_serves_backends_and_pools_the_dispatcher_knows(tmp_path: Path) -> None:
    agent = loaded_agent(tmp_path)
    dispatcher = k.replica_config(tmp_path / "dispatcher")
    assert set(agent.backends) <= set(dispatcher.backends)
    assert set(agent.pool_ids) <= {pool.id for pool in dispatcher.pools}


def test_agent_outbox_is_on_a_persistent_volume(tmp_path: Path) -> None:
    # Unacked usage reports must outlive the pod, and the root filesystem is read-only.
    workload, container = the_agent()
    outbox = loaded_agent(tmp_path).outbox
    claims = {v["name"] for v in k.pod_spec(workload)["volumes"] if "persistentVolumeClaim" in v}
    mounted = [m for m in container["volumeMounts"] if m["name"] in claims]
    assert any(Path(m["mountPath"]) in (outbox, *outbox.parents) for m in mounted), outbox


def test_agent_runs_alone_for_its_cluster() -> None:
    workload, _ = the_agent()
    # Two agents for one cluster would both report its whole load.
    assert workload["spec"]["replicas"] == 1
    assert workload["spec"]["strategy"]["type"] == "Recreate"


def simulators() -> list[k.Obj]:
    workload, _ = the_agent()
    return [
        c for c in k.containers(workload) if k.invocation(c).subcommands == ("simulate-workers",)
    ]


def test_simulated_workers_are_a_sidecar_of_the_agent() -> None:
    # The local API listens on loopback: only containers of the agent's pod reach it.
    assert len(simulators()) == 1
    assert k.running("regional-agent", "simulate-workers") == [(the_agent()[0], simulators()[0])]


@pytest.mark.parametrize("container", simulators(), ids=lambda c: c["name"])
def test_simulator_drives_the_agents_api_with_its_versions_and_pools(
    container: k.Obj, tmp_path: Path
) -> None:
    agent, args = loaded_agent(tmp_path), k.invocation(container).args
    assert host_port(args.api) == host_port(agent.local_api)
    assert set(args.versions) <= set(agent.versions)
    assert set(args.pools) <= set(agent.pool_ids)
