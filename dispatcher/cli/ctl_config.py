"""Where dispatchctl finds its server and credential: flags, then environment, then a config
file, then defaults.

The file (``--config``, else ``$DISPATCHCTL_CONFIG``, else ``~/.config/dispatchctl.yaml``
when it exists) is YAML::

    server: dispatcher.internal:50051
    token: "<operator token>"          # or a client certificate:
    tls: {ca_file: ca.crt, cert_file: me.crt, key_file: me.key}

Relative paths are relative to the file. A bad file is one error line naming it and the
field, exit 2.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from dispatcher.cli.common import EXIT_USAGE, fail

PROGRAM = "dispatchctl"
DEFAULT_SERVER = "127.0.0.1:50051"
DEFAULT_FILE = Path("~/.config/dispatchctl.yaml")
ENV = {"server": "DISPATCHCTL_SERVER", "token": "DISPATCHCTL_TOKEN"}
TLS_ENV = {
    "ca_file": "DISPATCHCTL_TLS_CA",
    "cert_file": "DISPATCHCTL_TLS_CERT",
    "key_file": "DISPATCHCTL_TLS_KEY",
}
KNOWN = {"server", "token", "tls"}


@dataclass(frozen=True)
class Connection:
    server: str
    token: str | None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def channel(self) -> grpc.aio.Channel:
        if self.ca_file is None and self.cert_file is None:
            return grpc.aio.insecure_channel(self.server)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file),
            private_key=_read(self.key_file),
            certificate_chain=_read(self.cert_file),
        )
        return grpc.aio.secure_channel(self.server, credentials)


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="dispatchctl config (server, token, tls)")
    parser.add_argument("--server", help=f"HOST:PORT (env DISPATCHCTL_SERVER; {DEFAULT_SERVER})")
    parser.add_argument("--token", help="operator token (env DISPATCHCTL_TOKEN)")
    parser.add_argument("--tls-ca", dest="ca_file", metavar="FILE", help="CA to trust (TLS)")
    parser.add_argument("--tls-cert", dest="cert_file", metavar="FILE", help="client certificate")
    parser.add_argument("--tls-key", dest="key_file", metavar="FILE", help="its private key")


def connection(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Connection:
    env = os.environ if env is None else env
    file_path, data = _file(args.config or env.get("DISPATCHCTL_CONFIG"))
    tls = data.get("tls") or {}
    if not isinstance(tls, dict):
        _bad(file_path, "tls", "must be a mapping")

    def pick(name: str, section: Mapping[str, Any], env_name: str) -> Any:
        return getattr(args, name, None) or env.get(env_name) or section.get(name)

    server = pick("server", data, ENV["server"]) or DEFAULT_SERVER
    token = pick("token", data, ENV["token"])
    paths = {}
    for name, env_name in TLS_ENV.items():
        value = pick(name, tls, env_name)
        from_file = not (getattr(args, name, None) or env.get(env_name))
        base = file_path.parent if (from_file and file_path) else Path.cwd()
        paths[name] = (base / str(value)).expanduser() if value else None
    if (paths["cert_file"] is None) != (paths["key_file"] is None):
        fail(PROGRAM, "a client certificate needs both --tls-cert and --tls-key", EXIT_USAGE)
    for name, path in paths.items():
        if path is not None and not path.is_file():
            fail(PROGRAM, f"{name.replace('_', ' ')} {path}: no such file", EXIT_USAGE)
    return Connection(str(server), str(token) if token else None, **paths)


def _file(given: str | None) -> tuple[Path | None, dict[str, Any]]:
    path = Path(given).expanduser() if given else DEFAULT_FILE.expanduser()
    if not path.is_file():
        if given:
            fail(PROGRAM, f"{path}: config file not found", EXIT_USAGE)
        return None, {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        fail(PROGRAM, f"{path}: cannot read: {str(exc).splitlines()[0]}", EXIT_USAGE)
    if not isinstance(data, dict):
        _bad(path, "(top level)", "must be a mapping")
    for key in data:
        if key not in KNOWN:
            _bad(path, str(key), f"unknown field; one of {sorted(KNOWN)}")
    return path, data


def _bad(path: Path | None, field: str, reason: str) -> None:
    fail(PROGRAM, f"{path}: {field}: {reason}", EXIT_USAGE)


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None
