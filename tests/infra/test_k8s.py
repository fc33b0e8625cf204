"""``infra/k8s/``: the kustomization is complete, every container runs a real command on a
config that loads, and probes, ports, selectors and secrets line up with the code."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.infra import kube as k
from tests.infra.commands import env_names_read_by_code, is_project_variable
from tests.infra.files import K8S_DIR, REPO, image, image_uid, port_of, pyproject

CONTAINERS = k.project_containers()
CONTAINER_IDS = [k.container_id(w, c) for w, c in CONTAINERS]


def test_kustomization_lists_every_manifest_and_only_those() -> None:
    listed = set(k.kustomization().get("resources") or [])
    present = {p.name for p in K8S_DIR.iterdir() if p.suffix in (".yaml", ".yml")}
    assert listed == present - {"kustomization.yaml"}


def test_every_object_has_api_version_kind_and_name() -> None:
    for obj in k.objects():
        assert obj.get("apiVersion"), obj
        assert obj.get("kind"), obj
        assert obj["metadata"].get("name"), obj


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_every_object() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(K8S_DIR)], capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, built.stderr
    assert len([d for d in yaml.safe_load_all(built.stdout) if d]) == len(k.objects())


def test_containers_run_the_project_image_at_the_project_version() -> None:
    (entry,) = k.kustomization()["images"]
    assert str(entry["newTag"]) == pyproject()["project"]["version"]
    for workload, container in k.all_containers():
        assert container["image"] == entry["name"], k.container_id(workload, container)


@pytest.mark.parametrize(("workload", "container"), CONTAINERS, ids=CONTAINER_IDS)
def test_container_runs_a_real_console_script_and_subcommand(
    workload: k.Obj, container: k.Obj
) -> None:
    assert k.invocation(container).subcommands, k.container_id(workload, container)


def test_render_steps_fill_every_placeholder(tmp_path: Path) -> None:
    rendered = [w for w in k.workloads() if any(map(k.is_render_step, k.init_containers(w)))]
    assert rendered, "no init container renders a config template"
    for workload in rendered:
        # Runs each step's script; string.Template.substitute fails on an unset placeholder.
        k.pod_files(workload, tmp_path / k.name_of(workload))


def test_project_environment_variables_are_ones_the_code_reads() -> None:
    known = env_names_read_by_code()
    for workload, container in k.all_containers():
        names = {e["name"] for e in container.get("env") or []}
        unknown = {n for n in names if is_project_variable(n)} - known
        assert not unknown, f"{k.container_id(workload, container)}: {sorted(unknown)}"


def test_secret_and_config_map_references_exist() -> None:
    for _, container in k.all_containers():
        k.container_env(container)  # fails naming a missing Secret, ConfigMap or key
    for workload in k.workloads():
        for volume in k.pod_spec(workload).get("volumes") or []:
            if "configMap" in volume:
                for item in volume["configMap"].get("items") or []:
                    k.config_map_value(volume["configMap"]["name"], item["key"])
            if "persistentVolumeClaim" in volume:
                k.find("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])


@pytest.mark.parametrize(
    ("workload", "container"),
    k.running("dispatcher", "serve") + k.running("dispatcher", "migrate"),
    ids=lambda obj: obj.get("name") or k.name_of(obj),
)
def test_dispatcher_config_loads_through_the_real_loader(
    workload: k.Obj, container: k.Obj, tmp_path: Path
) -> None:
    k.loaded_config(workload, container, tmp_path)


def test_workload_selectors_match_their_pod_templates() -> None:
    for workload in k.workloads():
        selector = workload["spec"].get("selector")
        if selector is not None:  # a Job generates its own
            assert k.selects(selector, k.pod_labels(workload)), k.name_of(workload)


def test_replicas_are_at_least_two_and_admit_their_share(tmp_path: Path) -> None:
    workload, _ = k.replicas()
    count = workload["spec"]["replicas"]
    assert count >= 2
    surge = (workload["spec"].get("strategy") or {}).get("rollingUpdate", {}).get("maxSurge", 0)
    assert isinstance(surge, int), "give maxSurge as a number: it bounds replicas running at once"
    # While Redis is down each replica admits 1/hot_store.replicas of the static share;
    # fewer than the pods running at once (a rollout adds maxSurge) over-admits.
    assert k.replica_config(tmp_path).hot_store.replicas >= count + surge


def test_probes_are_grpc_on_the_grpc_port(tmp_path: Path) -> None:
    _, container = k.replicas()
    grpc_port = port_of(k.replica_config(tmp_path).server.listen)
    assert {"readinessProbe", "livenessProbe"} <= set(container)
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        if kind in container:
            probe = container[kind]
            assert set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, kind
            assert probe["grpc"]["port"] == grpc_port, kind
            assert probe["grpc"].get("service", "") == "", "the server-wide health is ''"


def container_ports(container: k.Obj) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports") or []}


def test_container_ports_are_the_configured_ones_and_exposed(tmp_path: Path) -> None:
    _, container = k.replicas()
    server = k.replica_config(tmp_path).server
    assert server.metrics_listen, "no server.metrics_listen: nothing for Prometheus"
    for listen in (server.listen, server.metrics_listen):
        assert listen.rpartition(":")[0] in ("0.0.0.0", "::"), f"{listen} is pod-local"
    ports = container_ports(container)
    assert ports == {"grpc": port_of(server.listen), "metrics": port_of(server.metrics_listen)}
    assert set(ports.values()) <= image().exposed


def pods() -> list[tuple[k.Obj, dict[str, str]]]:
    return [(w, k.pod_labels(w)) for w in k.workloads()]


def test_service_selects_only_the_replicas_and_targets_their_ports() -> None:
    workload, container = k.replicas()
    service = k.find("Service", "dispatcher")
    selected = [w for w, labels in pods() if k.selects(service["spec"]["selector"], labels)]
    assert selected == [workload], [k.name_of(w) for w in selected]
    ports = container_ports(container)
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        assert target in ports or target in ports.values(), f"{port['name']} -> {target}"
    assert {p["name"] for p in service["spec"]["ports"]} >= {"grpc", "metrics"}


def test_disruption_budget_covers_only_the_replicas_and_lets_one_go() -> None:
    workload, _ = k.replicas()
    (pdb,) = k.of_kind("PodDisruptionBudget")
    selected = [w for w, labels in pods() if k.selects(pdb["spec"]["selector"], labels)]
    assert selected == [workload]
    count, spec = workload["spec"]["replicas"], pdb["spec"]
    # A budget that allows no disruption blocks every node drain.
    allowed = spec["maxUnavailable"] if "maxUnavailable" in spec else count - spec["minAvailable"]
    assert 1 <= allowed < count


def test_migrate_job_migrates_the_replicas_database() -> None:
    (job, container), *others = k.running("dispatcher", "migrate")
    assert not others, "one migrate job"
    assert job["kind"] == "Job"
    assert k.pod_spec(job)["restartPolicy"] in ("Never", "OnFailure")

    def database_source(c: k.Obj) -> tuple[str, ...]:
        (entry,) = [e for e in c.get("env") or [] if e["name"] == "DISPATCHER_DATABASE_URL"]
        return k.env_source(entry)

    assert database_source(container) == database_source(k.replicas()[1])
    assert database_source(container)[0] == "secret", "a database URL carries a password"


def test_termination_grace_covers_pre_stop_and_drain(tmp_path: Path) -> None:
    workload, container = k.replicas()
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    command = pre_stop.get("exec", {}).get("command", [])
    sleep = float(command[1]) if command[:1] == ["sleep"] else 0.0
    grace = k.replica_config(tmp_path).server.grace_period
    budget = k.pod_spec(workload).get("terminationGracePeriodSeconds", 30)
    assert budget > sleep + grace, f"SIGKILL after {budget}s cuts a {sleep}+{grace}s drain"


def test_pods_run_as_the_image_user() -> None:
    for workload in k.workloads():
        security = k.pod_spec(workload).get("securityContext") or {}
        assert security.get("runAsNonRoot") is True, k.name_of(workload)
        assert security.get("runAsUser", image_uid()) == image_uid(), k.name_of(workload)


def test_prometheus_k8s_config_keeps_the_service_metrics_port() -> None:
    config = yaml.safe_load((REPO / "infra" / "prometheus" / "prometheus-k8s.yml").read_text())
    (job,) = config["scrape_configs"]
    (sd,) = job["kubernetes_sd_configs"]
    assert sd["namespaces"]["names"] == [k.kustomization()["namespace"]]
    (keep,) = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert keep["source_labels"] == [
        "__meta_kubernetes_service_name",
        "__meta_kubernetes_endpoint_port_name",
    ]
    service = k.find("Service", "dispatcher")
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}
    # Prometheus joins the source labels with ";" and anchors the regex at both ends.
    assert re.fullmatch(keep["regex"], f"{k.name_of(service)};metrics")
    assert not re.fullmatch(keep["regex"], f"{k.name_of(service)};grpc")
