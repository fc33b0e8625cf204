"""An in-process dispatcher on a free loopback port, reached through the real stubs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from dispatcher.config import DispatcherConfig, load_config
from dispatcher.server import DispatcherServer


def embedded_config(tmp_path: Path, **overrides: object) -> DispatcherConfig:
    """The embedded default (memory + SQLite in ``tmp_path``) on an ephemeral port."""
    settings: dict[str, object] = {
        "server.listen": "127.0.0.1:0",
        "durable.database_url": f"sqlite+aiosqlite:///{tmp_path / 'ledger.sqlite3'}",
    }
    settings.update(overrides)
    return load_config(None, env={}, overrides=settings)


@contextlib.asynccontextmanager
async def running(config: DispatcherConfig) -> AsyncIterator[DispatcherServer]:
    """A started server on ``config``, stopped (grace 0) on exit."""
    server = DispatcherServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0)


@pytest.fixture
async def dispatcher_server(tmp_path: Path) -> AsyncIterator[DispatcherServer]:
    async with running(embedded_config(tmp_path)) as server:
        yield server


@pytest.fixture
async def channel(dispatcher_server: DispatcherServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(dispatcher_server.address) as chan:
        yield chan
