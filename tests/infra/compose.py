"""``infra/compose.yaml`` as the tests need it: services, their commands, env, mounts, ports.

Relative paths in a compose file are relative to the file's directory (``infra/``).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

from dispatcher.config import DispatcherConfig
from regional_agent.config import AgentConfig
from tests.infra.commands import (
    FileView,
    Invocation,
    agent_config,
    dispatcher_config,
    parse_command,
)
from tests.infra.files import COMPOSE_FILE, DOCKERFILE, INFRA, image, load_yaml


@cache
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict), COMPOSE_FILE
    assert isinstance(data.get("services"), dict), f"{COMPOSE_FILE} has no services"
    return data


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def builds_project_image(service: dict[str, Any]) -> bool:
    build = service.get("build")
    if not isinstance(build, dict):
        return False
    dockerfile = INFRA / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
    return dockerfile.resolve() == DOCKERFILE.resolve()


@cache
def project_image_names() -> frozenset[str]:
    """Tags of the image built from infra/Dockerfile (``image:`` beside that ``build:``)."""
    return frozenset(
        s["image"] for s in services().values() if builds_project_image(s) and "image" in s
    )


def runs_project_image(service: dict[str, Any]) -> bool:
    return builds_project_image(service) or service.get("image") in project_image_names()


def environment(service: dict[str, Any], *, with_image: bool = True) -> dict[str, str]:
    """The container's environment: the image's ENV (project image), then the service's."""
    env = dict(image().env) if with_image and runs_project_image(service) else {}
    declared = service.get("environment") or {}
    if isinstance(declared, list):
        declared = dict(item.split("=", 1) for item in declared)
    env.update({str(k): "" if v is None else str(v) for k, v in declared.items()})
    return env


def command(service: dict[str, Any]) -> list[str] | None:
    """The command the container runs: ``command:`` or, for the project image, its CMD."""
    declared = service.get("command")
    if declared is None:
        return list(image().cmd or []) if runs_project_image(service) else None
    return shlex.split(declared) if isinstance(declared, str) else [str(w) for w in declared]


@dataclass(frozen=True)
class Mount:
    source: str  # as written: a path (bind) or a volume name
    target: PurePosixPath

    @property
    def is_bind(self) -> bool:
        return self.source.startswith((".", "/"))

    @property
    def host_path(self) -> Path:
        return (INFRA / self.source).resolve()


def mounts(service: dict[str, Any]) -> list[Mount]:
    found = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            found.append(Mount(str(volume.get("source", "")), PurePosixPath(volume["target"])))
        else:
            source, target, *_ = str(volume).split(":")
            found.append(Mount(source, PurePosixPath(target)))
    return found


def file_view(service: dict[str, Any]) -> FileView:
    """Bind mounts over the image's copied files."""
    view = dict(image().files) if runs_project_image(service) else {}
    view.update({m.target: m.host_path for m in mounts(service) if m.is_bind})
    return FileView(view)


def published_ports(service: dict[str, Any]) -> list[int]:
    """Container ports of ``ports:`` (``"127.0.0.1:50052:50051"`` -> 50051)."""
    found = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            found.append(int(port["target"]))
        else:
            found.append(int(str(port).split(":")[-1].split("/")[0]))
    return found


def invocation(name: str) -> Invocation:
    service = services()[name]
    argv = command(service)
    assert argv, f"service {name} runs no command"
    return parse_command(argv, environment(service))


def project_services(*subcommand: str, script: str | None = None) -> list[str]:
    """Names of project-image services running ``script subcommand`` (all if not given)."""
    names = []
    for name, service in services().items():
        if not runs_project_image(service):
            continue
        run = invocation(name)
        if (script is None or run.script == script) and run.subcommands[: len(subcommand)] == (
            subcommand
        ):
            names.append(name)
    return names


def dispatcher_services(*subcommand: str) -> list[str]:
    return project_services(*subcommand, script="dispatcher")


def config_of(name: str) -> DispatcherConfig:
    service = services()[name]
    return dispatcher_config(invocation(name), environment(service), file_view(service))


def agent_config_of(name: str) -> AgentConfig:
    return agent_config(invocation(name), file_view(services()[name]))


def network_names(name: str) -> set[str]:
    """DNS names other containers reach this service by: its name and its aliases."""
    names = {name}
    networks = services()[name].get("networks") or {}
    if isinstance(networks, dict):
        for network in networks.values():
            names |= set((network or {}).get("aliases") or [])
    return names


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependency -> condition (the short list form means ``service_started``)."""
    declared = service.get("depends_on") or {}
    if isinstance(declared, list):
        return dict.fromkeys(declared, "service_started")
    return {dep: (spec or {}).get("condition", "service_started") for dep, spec in declared.items()}


def healthcheck_command(service: dict[str, Any]) -> list[str] | None:
    test = (service.get("healthcheck") or {}).get("test")
    if test is None:
        return None
    if isinstance(test, str):
        return shlex.split(test)
    kind, *argv = test
    return shlex.split(argv[0]) if kind == "CMD-SHELL" else argv
