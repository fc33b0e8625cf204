"""Commands and environments in the deployment files, checked against the real CLIs and loaders.

A command line from compose, k8s or the Dockerfile is parsed by the very ``argparse`` parser
its console script builds, and a config file is loaded by the project's own loader with the
environment the container would have: what passes here is what the process would accept.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import importlib
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from unittest import mock

import pytest

from dispatcher.cli.server import config_from_args
from dispatcher.config import CONFIG_PATH_VARIABLE, ENVIRONMENT_VARIABLES, DispatcherConfig
from regional_agent.config import AgentConfig, load_agent_config
from tests.infra.files import REPO, pyproject

# Packages whose source may read environment variables (the generated protobuf code does not).
SOURCE_PACKAGES = ("dispatcher", "regional_agent")
GENERATED = REPO / "dispatcher" / "v1"


@cache
def console_scripts() -> dict[str, str]:
    """``{"dispatcher": "dispatcher.cli.server:main", ...}`` from pyproject [project.scripts]."""
    return dict(pyproject()["project"]["scripts"])


@cache
def project_env_prefixes() -> tuple[str, ...]:
    """``DISPATCHER_`` etc.: each console script's name as an environment variable prefix."""
    return tuple(name.upper().replace("-", "_") + "_" for name in console_scripts())


def is_project_variable(name: str) -> bool:
    return name.startswith(project_env_prefixes())


def _environ_access(node: ast.AST) -> bool:
    """``os.environ`` or a bare ``environ``."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ"
    return isinstance(node, ast.Name) and node.id == "environ"


def _literal_env_reads(tree: ast.AST) -> Iterator[str]:
    """Names in ``os.environ.get("X")``, ``os.getenv("X")``, ``os.environ["X"]``, ``"X" in
    os.environ``."""
    for node in ast.walk(tree):
        key: ast.AST | None = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            getter = node.func.attr == "get" and _environ_access(node.func.value)
            if getter or node.func.attr == "getenv":
                key = node.args[0]
        elif isinstance(node, ast.Subscript) and _environ_access(node.value):
            key = node.slice
        elif isinstance(node, ast.Compare) and any(_environ_access(c) for c in node.comparators):
            key = node.left
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            yield key.value


@cache
def env_names_read_by_code() -> frozenset[str]:
    """Every environment variable the project reads: the config loader's table, plus each
    literal name read anywhere in the source (the CLIs' ``REGIONAL_AGENT_*`` defaults, ...)."""
    names = set(ENVIRONMENT_VARIABLES) | {CONFIG_PATH_VARIABLE}
    for package in SOURCE_PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if GENERATED not in path.parents:
                names |= set(_literal_env_reads(ast.parse(path.read_text(encoding="utf-8"))))
    return frozenset(names)


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` as the container has it: the test runner's own project variables
    removed (they would leak into parser defaults), ``env`` added."""
    kept = {k: v for k, v in os.environ.items() if not is_project_variable(k)}
    with mock.patch.dict(os.environ, {**kept, **env}, clear=True):
        yield


def build_parser(script: str) -> argparse.ArgumentParser:
    """The parser the console script's ``main`` uses: ``build_parser()`` of its module."""
    module_name, _, function = console_scripts()[script].partition(":")
    module = importlib.import_module(module_name)
    build = getattr(module, "build_parser", None)
    assert callable(build), f"{module_name} has no build_parser() beside {function}()"
    parser = build()
    assert isinstance(parser, argparse.ArgumentParser)
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _parser_chain(
    parser: argparse.ArgumentParser, words: Sequence[str]
) -> tuple[list[argparse.ArgumentParser], tuple[str, ...]]:
    """The parsers ``words`` walk through (top level, subcommand, ...) and the subcommands."""
    chain, names = [parser], []
    for word in words:
        choices = _subparsers(chain[-1])
        if word in choices:
            chain.append(choices[word])
            names.append(word)
    return chain, tuple(names)


def _check_flags_exact(chain: Sequence[argparse.ArgumentParser], argv: Sequence[str]) -> None:
    # argparse also accepts unique prefixes (``--conf``); a prefix becomes ambiguous, and the
    # command breaks, as soon as another flag starting the same way is added.
    known = {opt for parser in chain for action in parser._actions for opt in action.option_strings}
    for word in argv[1:]:
        if word.startswith("-") and not word.lstrip("-").replace(".", "").isdigit():
            flag = word.partition("=")[0]
            assert flag in known, f"{list(argv)}: {flag} is not a flag of this command"


@dataclass(frozen=True)
class Invocation:
    argv: tuple[str, ...]
    script: str
    subcommands: tuple[str, ...]  # ("serve",), ("limits", "set"), ...
    args: argparse.Namespace


def parse_command(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Invocation:
    """Parse ``argv`` with the real parser of its console script, in the container's ``env``;
    fail the test with argparse's own message if the command would not start."""
    assert argv, "empty command"
    script, *rest = argv
    assert script in console_scripts(), (
        f"{list(argv)}: {script!r} is not a console script of pyproject [project.scripts] "
        f"({', '.join(sorted(console_scripts()))})"
    )
    with environment(env or {}):
        parser = build_parser(script)
        chain, subcommands = _parser_chain(parser, rest)
        _check_flags_exact(chain, argv)
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                args = parser.parse_args(rest)
        except SystemExit:
            pytest.fail(f"{list(argv)} is refused by {script}'s parser: {stderr.getvalue()}")
    return Invocation(tuple(argv), script, subcommands, args)


class FileView:
    """Container paths -> files on this machine: bind mounts, ConfigMap keys, image COPYs."""

    def __init__(self, mounts: Mapping[PurePosixPath, Path]) -> None:
        self.mounts = dict(mounts)

    def host_path(self, container_path: str | PurePosixPath) -> Path:
        path = PurePosixPath(container_path)
        # The deepest mount wins, as in the container.
        for mount in sorted(self.mounts, key=lambda m: len(m.parts), reverse=True):
            if path == mount or mount in path.parents:
                return self.mounts[mount] / path.relative_to(mount)
        raise AssertionError(f"no mount or image file provides {path}")


def dispatcher_config(
    invocation: Invocation, env: Mapping[str, str], files: FileView
) -> DispatcherConfig:
    """The config a ``dispatcher ...`` command would run with: the real ``config_from_args``
    (flags > environment > file) with container paths read from where they are mounted."""
    assert invocation.script == "dispatcher", invocation.argv
    args = copy.copy(invocation.args)
    env = dict(env)
    if args.config:
        args.config = str(files.host_path(args.config))
    elif env.get(CONFIG_PATH_VARIABLE):
        env[CONFIG_PATH_VARIABLE] = str(files.host_path(env[CONFIG_PATH_VARIABLE]))
    with environment(env):
        return config_from_args(args)


def agent_config(invocation: Invocation, files: FileView) -> AgentConfig:
    """The config ``regional-agent run`` would run with, by the agent's own loader."""
    assert invocation.subcommands == ("run",), invocation.argv
    return load_agent_config(files.host_path(invocation.args.config))
