"""The ledger bench, tiny: the invariants that do not depend on speed hold on every backend.

Never admitted beyond capacity in any span, every event a replica made is in SQL exactly
once, nothing lost. The redis runs start their own redis-server (a binary on PATH) and write
to a fresh PostgreSQL database; the memory run writes to SQLite.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench import ledger as bench_ledger


def _require_redis_server() -> None:
    if shutil.which("redis-server"):
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("redis-server not on PATH; CI=true requires every backend", pytrace=False)
    pytest.skip("redis-server not on PATH")


async def _run(*argv: str) -> dict[str, Any]:
    result: dict[str, Any] = await bench_ledger.run(bench_ledger.parse_args(argv))
    return result


def _assert_invariants(result: dict[str, Any]) -> None:
    expected = result["journal_events_expected"] + result["journal_events_unconfirmed"]
    assert result["journal_events_in_sql"] == expected
    assert result["journal_events_lost"] == 0
    assert result["reservations"] > 0
    assert result["denials"] > 0  # demand is above capacity, or the ratio proves nothing


async def test_memory_bench_never_over_admits_and_loses_no_event(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    result = await _run("--backend", "memory", "--replicas", "1", "--callers", "10",
                        "--seconds", "2", "--database-url", db)  # fmt: skip
    _assert_invariants(result)
    assert result["admitted_over_capacity_max"] <= 1.0
    assert result["journal_events_unconfirmed"] == 0


@pytest.mark.redis
@pytest.mark.postgres
async def test_redis_bench_with_two_replica_processes(database_url: str) -> None:
    _require_redis_server()
    result = await _run("--backend", "redis", "--replicas", "2", "--callers", "10",
                        "--seconds", "2", "--database-url", database_url)  # fmt: skip
    _assert_invariants(result)
    assert result["admitted_over_capacity_max"] <= 1.0
    assert result["journal_events_in_redis"] == result["journal_events_in_sql"]


@pytest.mark.redis
@pytest.mark.postgres
async def test_redis_bench_counts_the_killed_replicas_events_from_the_journal(
    database_url: str,
) -> None:
    _require_redis_server()
    argv = ["--replicas", "2", "--callers", "10", "--seconds", "2", "--kill-replica"]
    result = await _run("--backend", "redis", *argv, "--database-url", database_url)
    _assert_invariants(result)
    assert result["admitted_over_capacity_max"] <= 1.0
    assert result["replicas_reported"] == 1
    assert result["journal_events_unreported_killed"] > 0
