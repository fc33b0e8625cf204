"""Shared fixtures: where the real backends are, and what to do when one is missing.

Backend tests talk to real servers. Locally a missing server skips its tests with the reason;
under ``CI=true`` the same situation fails the run, so CI can never go green by skipping.
Redis Cluster tests start a private cluster (``tests/redis_cluster.py``), and ``rediss://``
tests a private TLS-only server (``tests/redis_tls.py``), when ``redis-server`` is installed,
under the same policy.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from dispatcher import event_loop
from dispatcher.ledger.sql import migrate
from tests import redis_cluster
from tests import redis_tls as redis_tls_server
from tests.redis_tls import TlsRedis
from tests.tls import Pki, make_pki, openssl_missing

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Async tests run on the loop the dispatcher's processes run on (uvloop where it is
    installed: ``dispatcher.event_loop``); those marked ``both_loops`` on the stock asyncio
    loop too, which ``server.event_loop: asyncio`` selects."""
    production = {event_loop.default_loop_name(): event_loop.loop_factory("auto")}
    if item.get_closest_marker("both_loops"):
        return {**production, "asyncio": asyncio.new_event_loop}
    return production


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--redis-url",
        default=os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS_URL),
        help="Redis for backend tests (env TEST_REDIS_URL)",
    )
    parser.addoption(
        "--database-url",
        default=os.environ.get("TEST_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="PostgreSQL for backend tests (env TEST_DATABASE_URL)",
    )


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1.0
        ):
            return True
    except OSError:
        return False


def unavailable(message: str, remedy: str) -> None:
    """Skip (locally) or fail (CI=true): a backend this test needs is missing."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI=true requires every backend", pytrace=False)
    pytest.skip(f"{message}; {remedy}")


def require_server(url: str, default_port: int, what: str) -> None:
    """Skip (locally) or fail (CI=true) when ``url`` cannot be reached."""
    if not _reachable(url, default_port):
        unavailable(f"{what} not reachable at {url}", "start it or pass its URL")


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    url: str = request.config.getoption("--redis-url")
    require_server(url, 6379, "Redis")
    return url


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest) -> str:
    url: str = request.config.getoption("--database-url")
    require_server(url, 5432, "PostgreSQL")
    return url


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private 3-primary Redis Cluster for the session, as a ``redis+cluster://`` URL."""
    if missing := redis_cluster.missing_binaries():
        unavailable(f"Redis Cluster tests need {' and '.join(missing)}", "install redis-server")
    with redis_cluster.running(tmp_path_factory.mktemp("redis-cluster")) as url:
        yield url


@pytest.fixture
def redis_cluster_db(redis_cluster_url: str) -> Iterator[str]:
    """The cluster URL, every primary flushed before and after the test."""
    with redis_cluster.flushed(redis_cluster_url):
        yield redis_cluster_url


@pytest.fixture(scope="session")
def redis_tls(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsRedis]:
    """A private Redis that speaks only TLS, with the test PKI's server certificate."""
    if openssl_missing():
        unavailable("TLS Redis tests need openssl for their certificates", "install openssl")
    if reason := redis_tls_server.missing():
        unavailable(f"TLS Redis tests cannot run: {reason}", "install redis-server with TLS")
    pki: Pki = request.getfixturevalue("pki")  # after the checks: it runs openssl
    with redis_tls_server.running(tmp_path_factory.mktemp("redis-tls"), pki) as server:
        yield server


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[str]:
    """A Redis URL whose database is flushed before and after the test."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        yield redis_url
    finally:
        client.flushdb()
        client.close()


# PostgreSQL databases of a test's own: the shared `test` database may be in use elsewhere.


def admin_dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


async def _create_database(database_url: str) -> str:
    name = f"dsp_durable_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_dsn(database_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return make_url(database_url).set(database=name).render_as_string(False)


async def _drop_database(database_url: str, url: str) -> None:
    conn = await asyncpg.connect(admin_dsn(database_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def fresh_pg_url(database_url: str) -> Iterator[str]:
    """An empty PostgreSQL database of this test's own."""
    url = asyncio.run(_create_database(database_url))
    try:
        yield url
    finally:
        asyncio.run(_drop_database(database_url, url))


@pytest.fixture(scope="session")
def migrated_pg_url(database_url: str) -> Iterator[str]:
    """A PostgreSQL database at head, shared by this session's ledger tests."""
    url = asyncio.run(_create_database(database_url))
    try:
        asyncio.run(migrate.upgrade(url))
        yield url
    finally:
        asyncio.run(_drop_database(database_url, url))


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate and client certificates on demand (needs openssl: the
    modules using it skip without)."""
    return make_pki(tmp_path_factory.mktemp("pki"))
