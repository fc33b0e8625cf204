"""Build a ``DispatcherConfig`` from a YAML file, the environment and command-line overrides.

Layers are merged as plain data first (defaults < file < environment < command line) and
validated once, so cross-section checks see the final values. The first problem becomes one
``ConfigError`` naming where the bad value came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from dispatcher.config.model import DispatcherConfig
from dispatcher.config.values import describe
from dispatcher.errors import ConfigError

CONFIG_PATH_VARIABLE = "DISPATCHER_CONFIG"

# Environment variable -> dotted field it sets. Empty values count as unset.
ENVIRONMENT_VARIABLES: Mapping[str, str] = {
    "DISPATCHER_LISTEN": "server.listen",
    "DISPATCHER_REDIS_URL": "hot_store.url",
    "DISPATCHER_DATABASE_URL": "durable.database_url",
    "DISPATCHER_LOG_FORMAT": "server.log_format",
    "DISPATCHER_LOG_LEVEL": "server.log_level",
    "DISPATCHER_EVENT_LOOP": "server.event_loop",
    "DISPATCHER_METRICS_LISTEN": "server.metrics_listen",
    "DISPATCHER_GATEWAY_LISTEN": "relay.gateway_listen",
    "DISPATCHER_REPLICAS": "hot_store.replicas",
}

ENVIRONMENT = "environment"
COMMAND_LINE = "command line"
DEFAULTS = "defaults"
WHOLE_FILE = "(file)"
TOP_LEVEL = "(top level)"

Loc = tuple[str | int, ...]


def find_config_path(
    path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> Path | None:
    """The file ``load_config`` reads: ``path``, else ``$DISPATCHER_CONFIG``, else none."""
    env = os.environ if env is None else env
    if path is not None:
        return Path(path)
    from_env = env.get(CONFIG_PATH_VARIABLE)
    return Path(from_env) if from_env else None


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> DispatcherConfig:
    """Load, merge and validate the configuration; raise ``ConfigError`` on the first problem.

    ``overrides`` maps dotted fields to values, e.g. ``{"server.listen": "127.0.0.1:0"}``;
    ``None`` values are skipped so unset command-line flags can be passed straight through.
    ``env`` defaults to ``os.environ``.
    """
    env = os.environ if env is None else env
    file_path = find_config_path(path, env)
    data = read_config_file(file_path, from_env=path is None) if file_path else {}
    origins: dict[Loc, tuple[str, str]] = {}
    for variable, field in ENVIRONMENT_VARIABLES.items():
        if text := env.get(variable):
            _apply(data, origins, field, text, (ENVIRONMENT, f" (from {variable})"))
    for field, value in (overrides or {}).items():
        if value is not None:
            _apply(data, origins, field, value, (COMMAND_LINE, ""))
    try:
        return DispatcherConfig.model_validate(data)
    except ValidationError as exc:
        # Not chained: pydantic's message repeats raw input values, which may be secrets.
        raise _config_error(exc, str(file_path) if file_path else DEFAULTS, origins) from None


def read_config_file(path: Path, *, from_env: bool = False) -> dict[str, Any]:
    """The top-level mapping of a YAML config file; empty file = ``{}``."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = f" (named by {CONFIG_PATH_VARIABLE})" if from_env else ""
        raise ConfigError(source, WHOLE_FILE, "file not found" + hint) from None
    except UnicodeDecodeError:
        raise ConfigError(source, WHOLE_FILE, "not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(source, WHOLE_FILE, f"cannot read: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: builds plain data only
    except yaml.YAMLError as exc:
        raise ConfigError(source, WHOLE_FILE, _yaml_reason(exc)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        reason = f"expected a mapping of sections, got {describe(data)}"
        raise ConfigError(source, TOP_LEVEL, reason)
    # A section whose entries are all commented out parses as null: treat it as absent.
    return {key: value for key, value in data.items() if value is not None}


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key repeated in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *base" then overriding a merged key is the point of merging
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # SafeLoader itself rejects unhashable keys with a marked error
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _yaml_reason(exc: yaml.YAMLError) -> str:
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return f"invalid YAML: {exc}"
    reason = f"invalid YAML at line {exc.problem_mark.line + 1}: {exc.problem}"
    # An unclosed bracket is only noticed at the end; the context says where it opened.
    mark = exc.context_mark
    if exc.context and mark is not None and mark.line != exc.problem_mark.line:
        reason += f" ({exc.context} at line {mark.line + 1})"
    return reason


def _apply(
    data: dict[str, Any],
    origins: dict[Loc, tuple[str, str]],
    field: str,
    value: object,
    origin: tuple[str, str],
) -> None:
    """Set dotted ``field`` in ``data`` and remember who set it, for error messages."""
    keys = field.split(".")
    if not all(keys):
        raise ConfigError(origin[0], field, "not a dotted field name")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            return  # validation reports the file's non-mapping value at ``key``
        node = child
    node[keys[-1]] = value
    origins[tuple(keys)] = origin


def _config_error(
    exc: ValidationError, file_source: str, origins: Mapping[Loc, tuple[str, str]]
) -> ConfigError:
    error = exc.errors()[0]
    ctx = error.get("ctx") or {}
    model_loc: Loc = tuple(error["loc"])
    loc: Loc = model_loc + tuple(ctx.get("at", ()))
    name_problem = bool(loc) and loc[-1] == "[key]"
    if name_problem:
        loc = loc[:-1]
    source, suffix = _source_of(loc, model_loc, file_source, origins)
    reason = _reason(error, hide_input=bool(loc) and loc[0] == "auth")
    if name_problem:
        reason = f"invalid name: {reason}"
    return ConfigError(source, dotted(loc), reason + suffix)


def _source_of(
    loc: Loc, model_loc: Loc, file_source: str, origins: Mapping[Loc, tuple[str, str]]
) -> tuple[str, str]:
    """Who set the bad value: the layer that set ``loc`` (or a parent), else the file."""
    for at, origin in origins.items():
        if loc[: len(at)] == at:
            return origin
    # A cross-field check names one field but may be failed by another (tls.key_file missing
    # because a flag set tls.cert_file); with no file, defaults are never the culprit.
    if file_source == DEFAULTS:
        for at, origin in origins.items():
            if at[: len(model_loc)] == model_loc:
                return origin
    return file_source, ""


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def dotted(loc: Iterable[str | int]) -> str:
    """``pools[1].tpm`` from ``("pools", 1, "tpm")``; odd keys are quoted: ``agents["a@1.2"]``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _BARE_KEY.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += '["' + part.replace('"', '\\"') + '"]'
    return text or TOP_LEVEL


_FIXED_REASONS = {
    "extra_forbidden": "unknown field",
    "missing": "required",
    "finite_number": "must be a finite number",
    "path_not_file": "file not found",
    "int_from_float": "expected a whole number",
    "invalid_key": "field names must be strings",
}
_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}
_EXPECTED = {
    "float_parsing": "a number",
    "float_type": "a number",
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "tuple_type": "a list",
    "list_type": "a list",
    "path_type": "a file path",
}


def _reason(error: ErrorDetails, *, hide_input: bool) -> str:
    """A short human reason for one pydantic error; never echoes secrets."""
    kind, ctx = error["type"], error.get("ctx") or {}
    got = "" if hide_input else f", got {describe(error['input'])}"
    if kind == "config":
        return str(ctx["reason"])
    if kind in _FIXED_REASONS:
        return _FIXED_REASONS[kind]
    if kind in _BOUNDS:
        key, sign = _BOUNDS[kind]
        return f"must be {sign} {ctx[key]:g}"
    if kind == "literal_error":
        return f"expected {ctx['expected']}{got}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}{got}"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty"
    return str(error["msg"]).removeprefix("Value error, ")
