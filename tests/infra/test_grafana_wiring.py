"""Grafana in ``infra/compose.yaml``: its mounts, and the read-only ledger login it uses.

The dashboards and provisioning under ``infra/grafana/`` are written separately; the tests
that read them skip, saying so, while that directory is absent.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.infra import compose as c
from tests.infra.files import GRAFANA_DIR, load_yaml

PROVISIONING = PurePosixPath("/etc/grafana/provisioning")
DASHBOARDS = PurePosixPath("/var/lib/grafana/dashboards")
DATASOURCE_FILE = GRAFANA_DIR / "provisioning" / "datasources" / "ledger.yaml"
DASHBOARD_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yaml"
READONLY_USER_VARIABLES = ("LEDGER_RO_USER", "LEDGER_RO_PASSWORD")
# Grafana expands $NAME and ${NAME} in provisioning files from its environment.
ENV_REFERENCE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
GETENV = re.compile(r"^\\getenv\s+\S+\s+(\S+)", re.MULTILINE)


def service_named(prefix: str) -> tuple[str, dict[str, Any]]:
    found = [(n, s) for n, s in c.services().items() if str(s.get("image", "")).startswith(prefix)]
    assert len(found) == 1, f"expected one {prefix} service, found {[n for n, _ in found]}"
    return found[0]


def grafana() -> dict[str, Any]:
    return service_named("grafana/")[1]


def readonly_login() -> tuple[str, dict[str, Any]]:
    """The one-shot service that runs the SQL giving Grafana its read-only login."""
    found = [(n, s) for n, s in c.services().items() if (c.command(s) or [""])[0] == "psql"]
    assert len(found) == 1, f"expected one psql service, found {[n for n, _ in found]}"
    return found[0]


def strings(data: Any) -> list[str]:
    """Every string value of parsed YAML (comments are gone, and Grafana does not expand them)."""
    if isinstance(data, dict):
        return [text for value in data.values() for text in strings(value)]
    if isinstance(data, list):
        return [text for value in data for text in strings(value)]
    return [data] if isinstance(data, str) else []


def require_grafana_dir() -> None:
    if not GRAFANA_DIR.is_dir():
        pytest.skip(f"{GRAFANA_DIR} is not there yet (written separately)")


def test_grafana_mounts_provisioning_and_dashboards() -> None:
    targets = {m.target: m for m in c.mounts(grafana())}
    assert targets[PROVISIONING].host_path == (GRAFANA_DIR / "provisioning").resolve()
    assert targets[DASHBOARDS].host_path == (GRAFANA_DIR / "dashboards").resolve()


def test_grafana_mount_sources_are_directories() -> None:
    require_grafana_dir()
    for mount in c.mounts(grafana()):
        if mount.is_bind:
            assert mount.host_path.is_dir(), f"{mount.source} is not a directory"


def test_datasource_variables_are_set_for_grafana() -> None:
    require_grafana_dir()
    if not DATASOURCE_FILE.exists():
        pytest.skip(f"{DATASOURCE_FILE} is not there yet")
    referenced = {
        a or b
        for text in strings(load_yaml(DATASOURCE_FILE))
        for a, b in ENV_REFERENCE.findall(text)
    }
    missing = referenced - set(c.environment(grafana()))
    assert not missing, f"{DATASOURCE_FILE.name} reads unset variables {sorted(missing)}"


def test_datasource_hosts_are_compose_services() -> None:
    require_grafana_dir()
    if not DATASOURCE_FILE.exists():
        pytest.skip(f"{DATASOURCE_FILE} is not there yet")
    for source in load_yaml(DATASOURCE_FILE).get("datasources") or []:
        url = str(source.get("url", ""))
        host = urlsplit(url if "://" in url else f"//{url}").hostname
        assert host in c.services(), f"datasource {source.get('name')}: no service {host}"


def test_dashboard_providers_read_a_mounted_directory() -> None:
    require_grafana_dir()
    if not DASHBOARD_PROVIDERS.exists():
        pytest.skip(f"{DASHBOARD_PROVIDERS} is not there yet")
    targets = [m.target for m in c.mounts(grafana())]
    for provider in load_yaml(DASHBOARD_PROVIDERS).get("providers") or []:
        path = PurePosixPath(provider["options"]["path"])
        assert any(path == t or t in path.parents for t in targets), f"{path} is not mounted"


def test_grafana_and_the_login_step_agree_on_the_readonly_login() -> None:
    _, login = readonly_login()
    for variable in READONLY_USER_VARIABLES:
        assert c.environment(grafana()).get(variable), f"grafana lacks {variable}"
        assert c.environment(grafana())[variable] == c.environment(login).get(variable)


def test_login_step_reads_only_variables_it_has() -> None:
    name, login = readonly_login()
    (sql,) = [m for m in c.mounts(login) if m.is_bind and m.source.endswith(".sql")]
    assert sql.host_path.is_file(), f"{name} mounts missing {sql.source}"
    read = set(GETENV.findall(sql.host_path.read_text(encoding="utf-8")))
    assert set(READONLY_USER_VARIABLES) <= read
    missing = read - set(c.environment(login))
    assert not missing, f"{name} lacks {sorted(missing)}"
    assert str(sql.target) in (c.command(login) or []), f"{name} does not run {sql.target}"


def test_login_step_connects_as_the_postgres_owner() -> None:
    _, login = readonly_login()
    env = c.environment(login)
    postgres = c.environment(c.services()[env["PGHOST"]])
    assert env["PGUSER"] == postgres["POSTGRES_USER"]
    assert env["PGPASSWORD"] == postgres["POSTGRES_PASSWORD"]
    assert env["PGDATABASE"] == postgres.get("POSTGRES_DB", postgres["POSTGRES_USER"])


def test_login_step_runs_after_migrate_and_before_grafana() -> None:
    name, login = readonly_login()
    (migrate,) = c.dispatcher_services("migrate")
    # The migration creates role dispatcher_readonly; the login is granted it afterwards.
    assert c.depends_on(login).get(migrate) == "service_completed_successfully"
    assert c.depends_on(grafana()).get(name) == "service_completed_successfully"
