"""Value types shared by the config sections: durations, addresses, store URLs, numbers.

Each is an ``Annotated`` type whose validator raises ``PydanticCustomError`` with a short,
human reason; ``loading.py`` turns that reason into a ``ConfigError`` unchanged.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

_DURATION = re.compile(r"\s*(-?\d+(?:\.\d*)?|-?\.\d+)\s*(ms|s|m|h)?\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")

HOT_STORE_SCHEMES = ("memory", "redis", "rediss", "unix")
DATABASE_SCHEMES = ("sqlite+aiosqlite", "postgresql+asyncpg")


def config_problem(reason: str, *at: str | int) -> PydanticCustomError:
    """A validation error with a final human reason, optionally below the validated value.

    ``at`` is the path from the model that raises it down to the offending field, so a
    cross-field check on the top model can still name ``pools[3].id``.
    """
    return PydanticCustomError("config", "{reason}", {"reason": reason, "at": at})


def describe(value: object) -> str:
    """A value as the YAML author wrote it: ``'abc'``, ``12``, ``null``, ``a mapping``."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: Any) -> Any:
    # bool is an int subclass; without this, ``tpm: yes`` in YAML would quietly mean 1.
    if isinstance(value, bool):
        raise config_problem(f"expected a number, got {describe(value)}")
    return value


def parse_duration(value: Any) -> float:
    """Seconds from ``250ms``, ``30s``, ``5m``, ``1h`` or a plain number of seconds.

    Raises ``ValueError`` (a ``PydanticCustomError``) with a human reason otherwise.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        expected = "expected a duration such as 250ms, 30s, 5m or 1h"
        raise config_problem(f"{expected}, got {describe(value)}")
    if not math.isfinite(seconds):
        raise config_problem("must be a finite duration")
    if seconds < 0:
        raise config_problem("must be >= 0")
    return seconds


def split_host_port(value: str) -> tuple[str, int]:
    """``("127.0.0.1", 50051)`` from ``"127.0.0.1:50051"``; IPv6 hosts lose their brackets.

    Raises ``ValueError`` with a human reason when ``value`` is not ``HOST:PORT``.
    """
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port must be 0-65535, got {port}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        _check_ip(host, 6, value)
    elif host.replace(".", "").isdigit():
        _check_ip(host, 4, value)
    elif not _HOSTNAME.fullmatch(host):
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host, port


def _check_ip(host: str, version: int, original: str) -> None:
    try:
        valid = ipaddress.ip_address(host).version == version
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"invalid IPv{version} address in {original!r}")


def _host_port(value: Any) -> Any:
    if not isinstance(value, str):
        raise config_problem(f"expected HOST:PORT as a string, got {describe(value)}")
    try:
        split_host_port(value)
    except ValueError as exc:
        raise config_problem(str(exc)) from None
    return value


def _url_scheme(value: Any, allowed: tuple[str, ...]) -> str:
    # Reasons name only the scheme: the rest of a URL may carry a password.
    if not isinstance(value, str):
        raise config_problem(f"expected a URL string, got {type(value).__name__}")
    scheme = urlsplit(value).scheme if "://" in value else ""
    if scheme not in allowed:
        expected = ", ".join(f"{s}://" for s in allowed)
        raise config_problem(f"unsupported URL scheme {scheme!r}; expected one of {expected}")
    return scheme


def _hot_store_url(value: Any) -> Any:
    scheme = _url_scheme(value, HOT_STORE_SCHEMES)
    parts = urlsplit(value)
    if scheme in ("redis", "rediss") and not parts.hostname:
        raise config_problem(f"{scheme}:// URL needs a host")
    if scheme == "unix" and not parts.path:
        raise config_problem("unix:// URL needs a socket path")
    return value


def _database_url(value: Any) -> Any:
    scheme = _url_scheme(value, DATABASE_SCHEMES)
    if scheme == "postgresql+asyncpg" and not urlsplit(value).hostname:
        raise config_problem("postgresql+asyncpg:// URL needs a host")
    return value


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for logs and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


Number = Annotated[float, BeforeValidator(_number)]
Count = Annotated[int, BeforeValidator(_number)]
Duration = Annotated[float, BeforeValidator(parse_duration)]
HostPort = Annotated[str, BeforeValidator(_host_port)]
HotStoreUrl = Annotated[str, BeforeValidator(_hot_store_url)]
DatabaseUrl = Annotated[str, BeforeValidator(_database_url)]
