"""Grafana dashboards (infra/grafana): every query runs, as the read-only role, on real data.

Each panel's and template variable's SQL is expanded the way Grafana's PostgreSQL data source
expands it (the macros of ``pkg/tsdb/grafana-postgresql-datasource/macros.go`` that the
dashboards use, and multi-value variables as quoted lists), then executed against a private
migrated PostgreSQL database filled by a real dispatcher run (``test_views``), logged in as a
temporary member of ``dispatcher_readonly``. So a dashboard that reads a table, names a column
a view lacks, or uses a macro nobody checked fails here rather than in front of an operator.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from dispatcher.ledger.sql import migrate
from tests.conftest import _create_database, _drop_database
from tests.durable.test_views import readonly_login, run_dispatcher_story

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "infra" / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "ledger.yaml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml"
#: Where infra/compose.yaml mounts infra/grafana/dashboards in the Grafana container.
CONTAINER_DASHBOARDS = "/var/lib/grafana/dashboards"
PANEL_TYPES = {"row", "stat", "timeseries", "table", "state-timeline", "barchart"}


# -- the dashboards, as files ------------------------------------------------------------------


DASHBOARD_NAMES = [path.name for path in DASHBOARD_FILES]


def _load(file: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((GRAFANA / "dashboards" / file).read_text())
    return loaded


def _panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


@dataclass(frozen=True)
class Query:
    """One SQL query of a dashboard: a panel target or a template variable."""

    file: str
    where: str
    sql: str
    format: str  # "time_series" | "table" (variables: "table")

    @property
    def id(self) -> str:
        return f"{self.file}:{self.where}"


def _queries() -> list[Query]:
    out = []
    for file in DASHBOARD_NAMES:
        for panel in _panels(_load(file)):
            for target in panel.get("targets", []):
                where = f"{panel['title']}/{target['refId']}"
                out.append(Query(file, where, target["rawSql"], target["format"]))
    return out


def _variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(dashboard.get("templating", {}).get("list", []))


def _provisioned_datasource() -> dict[str, Any]:
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    return dict(source)


def test_there_is_a_dashboard() -> None:
    assert DASHBOARD_NAMES == ["ledger.json"]


@pytest.mark.parametrize("file", DASHBOARD_NAMES)
def test_a_dashboard_is_well_formed(file: str) -> None:
    dashboard = _load(file)
    assert dashboard["uid"], file
    assert dashboard["title"], file
    assert isinstance(dashboard["schemaVersion"], int)
    panels = list(_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"{file}: duplicate panel ids"
    titles = [p["title"] for p in panels]
    assert len(titles) == len(set(titles)), f"{file}: duplicate panel titles"
    for panel in panels:
        assert panel["type"] in PANEL_TYPES, panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["rawQuery"] is True, panel["title"]
            assert target["editorMode"] == "code", panel["title"]
            assert target["format"] in ("time_series", "table"), panel["title"]
            assert target["rawSql"].strip(), panel["title"]
    for variable in _variables(dashboard):
        assert variable["type"] == "query"
        assert variable["query"] == variable["definition"]


@pytest.mark.parametrize("file", DASHBOARD_NAMES)
def test_every_query_uses_the_provisioned_datasource(file: str) -> None:
    dashboard = _load(file)
    source = _provisioned_datasource()
    expected = {"type": source["type"], "uid": source["uid"]}
    users = [p for p in _panels(dashboard) if p["type"] != "row"] + _variables(dashboard)
    for user in users:
        name = user.get("title") or user["name"]
        assert user["datasource"] == expected, f"{file}: {name}"
        for target in user.get("targets", []):
            assert target["datasource"] == expected, f"{file}: {name}/{target['refId']}"


def test_the_datasource_logs_in_as_the_readonly_user_from_the_environment() -> None:
    source = _provisioned_datasource()
    assert source["type"] == "grafana-postgresql-datasource"
    assert (source["url"], source["jsonData"]["database"]) == ("postgres:5432", "dispatcher")
    assert source["user"] == "$LEDGER_RO_USER"
    assert source["secureJsonData"] == {"password": "$LEDGER_RO_PASSWORD"}
    assert source["editable"] is False


def test_the_dashboard_provider_reads_where_the_dashboards_are_mounted() -> None:
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == CONTAINER_DASHBOARDS
    assert provider["allowUiUpdates"] is False
    assert DASHBOARD_FILES, "no dashboard JSON beside the provider"


# -- Grafana's macro expansion -----------------------------------------------------------------

MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")  # as in Grafana's macros.go
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
INTERVAL = re.compile(r"^(\d+)(s|m|h|d)$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class UnknownMacro(ValueError):
    pass


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Expander:
    """The subset of Grafana's PostgreSQL macros the dashboards use; anything else raises."""

    start: datetime
    end: datetime
    variables: Mapping[str, Sequence[str]]

    def expand(self, sql: str) -> str:
        expanded = MACRO.sub(lambda m: self._macro(m.group(1), m.group(2)), sql)
        if "$__" in expanded:
            raise UnknownMacro(f"unexpanded macro in: {expanded[expanded.index('$__') :][:40]}")
        return VARIABLE.sub(self._variable, expanded)

    def _macro(self, name: str, raw_args: str) -> str:
        args = [a.strip() for a in raw_args.split(",")] if raw_args.strip() else []
        match name, args:
            case "__timeFilter", [column]:
                return f"{column} BETWEEN '{_rfc3339(self.start)}' AND '{_rfc3339(self.end)}'"
            case "__timeFrom", []:
                return f"'{_rfc3339(self.start)}'"
            case "__timeTo", []:
                return f"'{_rfc3339(self.end)}'"
            case "__timeGroup", [column, interval]:
                seconds = self._seconds(interval)
                return f"floor(extract(epoch from {column})/{seconds})*{seconds}"
            case "__timeGroupAlias", [column, interval]:
                return self._macro("__timeGroup", f"{column}, {interval}") + ' AS "time"'
        raise UnknownMacro(f"${name}({raw_args}) is not a macro this expander knows")

    @staticmethod
    def _seconds(interval: str) -> int:
        found = INTERVAL.match(interval.strip("'"))
        if found is None:
            raise UnknownMacro(f"interval {interval!r}")
        return int(found.group(1)) * SECONDS[found.group(2)]

    def _variable(self, match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in self.variables:
            raise UnknownMacro(f"${name} is not a template variable of the dashboard")
        # A multi-value variable on "All": every value, quoted, comma-separated.
        return ",".join(_sql_literal(v) for v in self.variables[name])


def test_the_expander_writes_what_grafana_writes_and_refuses_the_rest() -> None:
    start = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    expander = Expander(start, start + timedelta(hours=1), {"pool": ["a", "o'b"]})
    assert expander.expand("SELECT $__timeGroupAlias(at, '5m') WHERE $__timeFilter(at)") == (
        """SELECT floor(extract(epoch from at)/300)*300 AS "time" """
        "WHERE at BETWEEN '2026-12-02T10:00:00Z' AND '2026-12-02T11:00:00Z'"
    )
    assert expander.expand("x IN ($pool) AND y < $__timeFrom()") == (
        "x IN ('a','o''b') AND y < '2026-12-02T10:00:00Z'"
    )
    for unknown in ("$__interval", "$__timeGroup(at, $__interval)", "$__unixEpochFilter(at)"):
        with pytest.raises(UnknownMacro):
            expander.expand(f"SELECT 1 WHERE {unknown}")
    with pytest.raises(UnknownMacro):
        expander.expand("SELECT $cluster")


# -- every query, run ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ledger:
    url: str
    start: datetime
    end: datetime


@pytest.fixture(scope="module")
def grafana_ledger(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    """A private migrated PostgreSQL database holding a real dispatcher run."""
    url = asyncio.run(_create_database(database_url))
    try:
        asyncio.run(migrate.upgrade(url))
        story = asyncio.run(run_dispatcher_story(tmp_path_factory.mktemp("grafana"), url))
        # Grafana's default range ends "now"; the run ended a moment ago.
        end = datetime.fromtimestamp(story.ended, tz=UTC) + timedelta(seconds=1)
        yield Ledger(url, end - timedelta(hours=6), end)
    finally:
        asyncio.run(_drop_database(database_url, url))


NUMBER = (int, float, Decimal)


def _seconds(value: datetime | Decimal | float) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


async def _variable_values(
    conn: asyncpg.Connection, ledger: Ledger, file: str
) -> dict[str, list[str]]:
    dashboard = _load(file)
    no_variables = Expander(ledger.start, ledger.end, {})
    values: dict[str, list[str]] = {}
    for variable in _variables(dashboard):
        rows = await conn.fetch(no_variables.expand(variable["query"]))
        values[variable["name"]] = [str(r[0]) for r in rows]
    return values


@pytest.mark.postgres
@pytest.mark.parametrize("file", DASHBOARD_NAMES)
async def test_every_template_variable_lists_values(grafana_ledger: Ledger, file: str) -> None:
    async with readonly_login(grafana_ledger.url) as conn:
        values = await _variable_values(conn, grafana_ledger, file)
    assert values, f"{file} has no template variables"
    for name, listed in values.items():
        assert listed, f"${name} lists nothing"
        assert len(listed) == len(set(listed)), f"${name} lists duplicates"
    assert set(values["pool"]) == {"openai/east", "openai/west", "local/gpu"}
    assert set(values["cluster"]) == {"east", "west", "s1", "s2"}


@pytest.mark.postgres
@pytest.mark.parametrize("query", _queries(), ids=lambda q: q.id)
async def test_every_panel_query_runs_as_the_readonly_role_and_returns_rows(
    grafana_ledger: Ledger, query: Query
) -> None:
    async with readonly_login(grafana_ledger.url) as conn:
        variables = await _variable_values(conn, grafana_ledger, query.file)
        sql = Expander(grafana_ledger.start, grafana_ledger.end, variables).expand(query.sql)
        rows = await conn.fetch(sql)
    assert rows, f"{query.id} returned no rows:\n{sql}"
    if query.format == "time_series":
        # What Grafana needs of a time series result: a "time" column, sorted, and at
        # least one numeric value column beside the optional "metric".
        columns = list(rows[0].keys())
        assert "time" in columns, f"{query.id}: no time column in {columns}"
        times = [_seconds(r["time"]) for r in rows]
        assert times == sorted(times), f"{query.id}: not ordered by time"
        values = [c for c in columns if c not in ("time", "metric")]
        assert values, f"{query.id}: no value column"
        for column in values:
            assert all(r[column] is None or isinstance(r[column], NUMBER) for r in rows), column
        if "metric" in columns:
            assert all(isinstance(r["metric"], str) for r in rows), query.id
