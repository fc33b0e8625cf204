"""The manifests of ``infra/k8s/`` as the tests need them: objects, pods, env, mounted files.

``pod_files`` materialises what a pod's containers would see: ConfigMap keys written to
files, emptyDirs shared between containers, and the init containers actually run (they
render config templates from Secret values), so a container's config is loaded from exactly
the bytes it would read.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

from dispatcher.config import DispatcherConfig
from tests.infra.commands import FileView, Invocation, dispatcher_config, parse_command
from tests.infra.files import K8S_DIR, image, load_yaml, load_yaml_documents

Obj = dict[str, Any]
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


@cache
def kustomization() -> Obj:
    data = load_yaml(K8S_DIR / "kustomization.yaml")
    assert isinstance(data, dict), "kustomization.yaml is not a mapping"
    return data


@cache
def objects() -> tuple[Obj, ...]:
    """Every object of every file the kustomization lists."""
    found = []
    for resource in kustomization().get("resources") or []:
        found += load_yaml_documents(K8S_DIR / resource)
    return tuple(found)


def of_kind(kind: str) -> list[Obj]:
    return [obj for obj in objects() if obj.get("kind") == kind]


def find(kind: str, name: str) -> Obj:
    found = [obj for obj in of_kind(kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def name_of(obj: Obj) -> str:
    return str(obj["metadata"]["name"])


def workloads() -> list[Obj]:
    return [obj for obj in objects() if obj.get("kind") in WORKLOAD_KINDS]


def pod_spec(workload: Obj) -> Obj:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: Obj) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"].get("labels") or {})


def containers(workload: Obj) -> list[Obj]:
    return list(pod_spec(workload)["containers"])


def init_containers(workload: Obj) -> list[Obj]:
    return list(pod_spec(workload).get("initContainers") or [])


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Whether a Service selector or a ``matchLabels`` selector matches ``labels``."""
    assert not selector.get("matchExpressions"), "matchExpressions are not modelled here"
    wanted = selector.get("matchLabels", selector)
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def secret_value(name: str, key: str) -> str:
    secret = find("Secret", name)
    if key in (secret.get("stringData") or {}):
        return str(secret["stringData"][key])
    assert key in (secret.get("data") or {}), f"Secret {name} has no key {key}"
    return base64.b64decode(secret["data"][key]).decode()


def config_map_value(name: str, key: str) -> str:
    data = find("ConfigMap", name).get("data") or {}
    assert key in data, f"ConfigMap {name} has no key {key}"
    return str(data[key])


def env_source(entry: Obj) -> tuple[str, ...]:
    """``("value", v)``, ``("secret", name, key)`` or ``("configmap", name, key)``."""
    if "value" in entry:
        return ("value", str(entry["value"]))
    source = entry.get("valueFrom") or {}
    for kind, field in (("secret", "secretKeyRef"), ("configmap", "configMapKeyRef")):
        if field in source:
            return (kind, source[field]["name"], source[field]["key"])
    raise AssertionError(f"env {entry.get('name')}: unsupported source {source}")


def resolve(source: tuple[str, ...]) -> str:
    if source[0] == "value":
        return source[1]
    lookup = secret_value if source[0] == "secret" else config_map_value
    return lookup(source[1], source[2])


def container_env(container: Obj, *, with_image: bool = True) -> dict[str, str]:
    """The container's environment, secrets resolved from the example Secret manifests."""
    assert not container.get("envFrom"), "envFrom is not modelled here: list variables"
    env = dict(image().env) if with_image else {}
    for entry in container.get("env") or []:
        env[entry["name"]] = resolve(env_source(entry))
    return env


def is_render_step(container: Obj) -> bool:
    """The init containers that fill a config template: ``python -c SCRIPT SOURCE TARGET``."""
    return list(container.get("command") or [])[:2] == ["python", "-c"]


def invocation(container: Obj) -> Invocation:
    argv = [*(container.get("command") or []), *(container.get("args") or [])] or image().cmd
    assert argv, f"container {container['name']} runs nothing"
    return parse_command(argv, container_env(container))


def _write_volume(volume: Obj, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if "configMap" in volume:
        name = volume["configMap"]["name"]
        data = find("ConfigMap", name).get("data") or {}
        items = volume["configMap"].get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            (directory / item["path"]).write_text(config_map_value(name, item["key"]))
    elif "persistentVolumeClaim" in volume:
        find("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    else:
        assert "emptyDir" in volume, f"volume {volume['name']}: kind not modelled here"


def _view(container: Obj, volumes: dict[str, Path]) -> FileView:
    mounts = dict(image().files)
    for mount in container.get("volumeMounts") or []:
        assert mount["name"] in volumes, f"{container['name']} mounts unknown {mount['name']}"
        mounts[PurePosixPath(mount["mountPath"])] = volumes[mount["name"]] / mount.get(
            "subPath", ""
        )
    return FileView(mounts)


def _run_render_step(container: Obj, view: FileView) -> None:
    script, *paths = container["command"][2:]
    host_paths = [str(view.host_path(path)) for path in paths]
    env = {k: v for k, v in container_env(container).items() if k != "PATH"}
    done = subprocess.run(
        [sys.executable, "-c", script, *host_paths], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"init container {container['name']} fails: {done.stderr}"


def pod_files(workload: Obj, tmp: Path) -> Callable[[Obj], FileView]:
    """Materialise the pod's volumes under ``tmp`` and run its render steps; return the
    file view of any of its containers."""
    volumes = {}
    for volume in pod_spec(workload).get("volumes") or []:
        volumes[volume["name"]] = tmp / volume["name"]
        _write_volume(volume, volumes[volume["name"]])
    for init in init_containers(workload):
        if is_render_step(init):
            _run_render_step(init, _view(init, volumes))
    return lambda container: _view(container, volumes)


def all_containers() -> Iterator[tuple[Obj, Obj]]:
    """(workload, container) for every container and init container."""
    for workload in workloads():
        for container in init_containers(workload) + containers(workload):
            yield workload, container


def container_id(workload: Obj, container: Obj) -> str:
    return f"{workload['kind']}/{name_of(workload)}/{container['name']}"


def project_containers() -> list[tuple[Obj, Obj]]:
    """(workload, container) for every container that runs a project command."""
    return [(w, c) for w, c in all_containers() if not is_render_step(c)]


def running(script: str, *subcommand: str) -> list[tuple[Obj, Obj]]:
    """(workload, container) pairs whose container runs ``script subcommand``."""
    return [
        (w, c)
        for w, c in project_containers()
        if (run := invocation(c)).script == script and run.subcommands == subcommand
    ]


def replicas() -> tuple[Obj, Obj]:
    """The dispatcher Deployment and its ``dispatcher serve`` container."""
    (found,) = running("dispatcher", "serve")
    return found


def loaded_config(workload: Obj, container: Obj, tmp: Path) -> DispatcherConfig:
    """The config a ``dispatcher`` container would run with, its templates rendered."""
    files = pod_files(workload, tmp)(container)
    return dispatcher_config(invocation(container), container_env(container), files)


def replica_config(tmp: Path) -> DispatcherConfig:
    workload, container = replicas()
    return loaded_config(workload, container, tmp)
