"""``infra/Dockerfile`` builds what pyproject says the project is, and runs it as the code
expects: console scripts on PATH, a config that loads, the ports it listens on exposed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import PurePosixPath

import pytest

from dispatcher.config import CONFIG_PATH_VARIABLE, DispatcherConfig
from tests.infra.commands import (
    FileView,
    console_scripts,
    dispatcher_config,
    env_names_read_by_code,
    is_project_variable,
    parse_command,
)
from tests.infra.files import (
    REPO,
    Instruction,
    dockerfile_instructions,
    dockerignored,
    image,
    image_uid,
    port_of,
    pyproject,
)

BASE_IMAGE = "python:3.12-slim"


def pip_install() -> Instruction:
    runs = [i for i in dockerfile_instructions() if i.keyword == "RUN"]
    (install,) = [i for i in runs if "pip install" in i.args]
    return install


def build_stage() -> tuple[PurePosixPath, dict[PurePosixPath, str]]:
    """Where ``pip install`` installs from, and what its stage copied before it: dest -> source."""
    install = pip_install()
    workdir, copies = PurePosixPath("/"), {}
    for instruction in dockerfile_instructions():
        if instruction == install:
            return workdir / install.args.split()[-1], copies
        if instruction.stage != install.stage:
            continue
        if instruction.keyword == "WORKDIR":
            workdir = workdir / instruction.args
        elif instruction.keyword == "COPY" and "from" not in instruction.options()[0]:
            *sources, destination = instruction.options()[1]
            into_directory = destination.endswith("/") or len(sources) > 1
            for source in sources:
                dest = workdir / destination
                copies[dest / PurePosixPath(source).name if into_directory else dest] = source
    raise AssertionError("unreachable: pip_install() is one of the instructions")


def test_every_stage_is_python_312_slim() -> None:
    bases = [base for base in image().bases if base not in image().stages]
    assert bases, "no FROM"
    assert all(base == BASE_IMAGE for base in bases), bases


def test_runs_as_a_non_root_numeric_user() -> None:
    assert image_uid() != 0, "USER is root"


def test_default_command_is_dispatcher_serve() -> None:
    assert image().entrypoint is None, "an ENTRYPOINT would prefix every compose/k8s command"
    run = parse_command(image().cmd or [], image().env)
    assert (run.script, run.subcommands) == ("dispatcher", ("serve",))


def test_copied_sources_exist_and_are_in_the_build_context() -> None:
    for instruction in dockerfile_instructions():
        if instruction.keyword != "COPY" or "from" in instruction.options()[0]:
            continue
        for source in instruction.options()[1][:-1]:
            assert (REPO / source).exists(), f"line {instruction.line}: no {source}"
            assert not dockerignored(source), f"line {instruction.line}: .dockerignore drops it"


def tracked_files(directory: str) -> list[str]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to list tracked files")
    listed = subprocess.run(
        ["git", "ls-files", "--", directory], cwd=REPO, capture_output=True, text=True, check=True
    )
    return listed.stdout.split()


def test_dockerignore_keeps_every_tracked_file_of_copied_directories() -> None:
    # A pattern such as **/*.lua would silently drop the ledger's Lua scripts from the image.
    for source in build_stage()[1].values():
        if (REPO / source).is_dir():
            dropped = [f for f in tracked_files(source) if dockerignored(f)]
            assert not dropped, f".dockerignore drops files the wheel needs: {dropped[:5]}"


def wheel_inputs() -> set[str]:
    """What hatchling reads to build the wheel: pyproject, the readme, packages, force-includes."""
    config = pyproject()
    wheel = config["tool"]["hatch"]["build"]["targets"]["wheel"]
    inputs = {"pyproject.toml", config["project"]["readme"], *wheel["packages"]}
    return inputs | set(wheel.get("force-include", {}))


def test_build_stage_copies_everything_the_wheel_is_built_from() -> None:
    project_dir, copies = build_stage()
    missing = [item for item in wheel_inputs() if copies.get(project_dir / item) != item]
    assert not missing, f"`pip install` in {project_dir} would miss {sorted(missing)}"


def test_console_scripts_are_on_path() -> None:
    # The build stage installs into a venv; the final stage must copy it and put it on PATH.
    pip = PurePosixPath(pip_install().args.split()[0])
    venv = pip.parent.parent
    assert pip == venv / "bin" / "pip", f"install with the venv's pip, not {pip}"
    copied = [(s, d) for _, s, d in image().copied_from_stages]
    assert (str(venv), str(venv)) in copied, f"final stage does not copy {venv} to itself"
    assert str(venv / "bin") in image().env.get("PATH", "").split(":")
    assert set(console_scripts()) == {"dispatcher", "dispatchctl", "regional-agent"}


def test_project_environment_variables_are_ones_the_code_reads() -> None:
    unknown = {k for k in image().env if is_project_variable(k)} - env_names_read_by_code()
    assert not unknown, f"ENV sets variables no code reads: {sorted(unknown)}"


def image_config() -> DispatcherConfig:
    run = parse_command(image().cmd or [], image().env)
    return dispatcher_config(run, image().env, FileView(image().files))


def test_baked_in_config_loads_through_the_real_loader() -> None:
    path = image().env.get(CONFIG_PATH_VARIABLE)
    assert path, f"the image sets no {CONFIG_PATH_VARIABLE}"
    assert PurePosixPath(path) in image().files, f"{path} is not copied into the image"
    image_config()


def test_expose_lists_the_ports_the_default_command_listens_on() -> None:
    config = image_config()
    listened = {port_of(config.server.listen), port_of(config.relay.gateway_listen)}
    if config.server.metrics_listen:
        listened.add(port_of(config.server.metrics_listen))
    assert image().exposed == listened
    assert config.server.listen.rpartition(":")[0] in ("0.0.0.0", "::"), "unreachable"
