"""Migrations: one head, a clean round trip on PostgreSQL and SQLite, models == migrations."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from dispatcher.ledger.sql import migrate
from dispatcher.ledger.sql.engine import open_engine
from dispatcher.ledger.sql.models import Base
from tests.durable.conftest import sqlite_url

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(
    params=[pytest.param("postgresql", marks=pytest.mark.postgres), pytest.param("sqlite")]
)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "nested" / "dir" / "ledger.db")
    return str(request.getfixturevalue("fresh_pg_url"))


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


def test_the_tree_has_a_single_head() -> None:
    assert len(migrate.heads()) == 1


def test_every_revision_file_is_date_prefixed_and_noted() -> None:
    notes = (REPO / "migrations" / "NOTES.md").read_text()
    for path in (REPO / "migrations" / "versions").glob("*.py"):
        assert path.name[:11].replace("_", "").isdigit(), path.name
        assert path.name in notes, f"{path.name} has no line in migrations/NOTES.md"


def test_a_source_checkout_uses_the_top_level_migrations_directory() -> None:
    assert migrate.script_location() == REPO / "migrations"


def test_an_installed_package_uses_its_bundled_migrations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundled = tmp_path / "dispatcher" / "_migrations"
    bundled.mkdir(parents=True)
    (bundled / "env.py").write_text("")
    monkeypatch.setattr(resources, "files", lambda _pkg: tmp_path / "dispatcher")
    assert migrate.script_location() == bundled


def test_the_wheel_bundles_migrations_where_the_code_looks() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    force = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert force["migrations"] == "dispatcher/_migrations"


async def test_upgrade_downgrade_upgrade_round_trips(empty_url: str) -> None:
    head = migrate.heads()[0]
    assert await migrate.current(empty_url) is None
    await migrate.upgrade(empty_url)
    assert await migrate.current(empty_url) == head
    await migrate.downgrade(empty_url, "base")
    assert await migrate.current(empty_url) is None
    engine = open_engine(empty_url)
    try:
        assert await _tables(engine) <= {"alembic_version"}
        await migrate.upgrade(empty_url)
        assert await _tables(engine) == set(Base.metadata.tables) | {"alembic_version"}
    finally:
        await engine.dispose()
    assert await migrate.current(empty_url) == head


async def test_models_and_migrations_agree(empty_url: str) -> None:
    await migrate.upgrade(empty_url)
    assert await migrate.check(empty_url) == []


async def test_check_reports_a_schema_that_drifted_from_the_models(empty_url: str) -> None:
    await migrate.upgrade(empty_url)
    engine = open_engine(empty_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP INDEX ix_reservations_state"))
    finally:
        await engine.dispose()
    diffs = await migrate.check(empty_url)
    assert any("ix_reservations_state" in d for d in diffs)


def test_run_migrate_is_a_synchronous_upgrade(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "ledger.db")
    migrate.run_migrate(url)
    assert (tmp_path / "ledger.db").exists()
