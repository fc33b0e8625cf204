"""``dispatcher journal``: the consumer as its own process (``durable.consumer: external``).

A real process against real Redis and SQLite: what the Redis ledger journals lands in SQL
exactly once, SIGTERM stops it cleanly, and a memory hot store is refused with one line.
"""

from __future__ import annotations

import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from dispatcher.ledger.redis_backend import RedisLedger
from dispatcher.ledger.sql import migrate
from dispatcher.ledger.sql.engine import DurableLedger, open_engine
from tests.durable.conftest import closed_port, eventually
from tests.ledger.helpers import one, spec
from tests.serving import dispatcher_cmd, sqlite_url

pytestmark = pytest.mark.redis

CONFIG = "pools:\n  - {id: p1, family: fam, tpm: 100000}\n"


def start(tmp_path: Path, redis_url: str, metrics_port: int) -> subprocess.Popen[str]:
    config = tmp_path / "dispatcher.yaml"
    config.write_text(f"{CONFIG}server: {{metrics_listen: '127.0.0.1:{metrics_port}'}}\n")
    cmd = dispatcher_cmd(
        *("journal", "--config", str(config), "--redis-url", redis_url),
        *("--database-url", sqlite_url(tmp_path), "--log-format", "json"),
    )
    with (tmp_path / "journal.log").open("w") as log:  # the child keeps its own copy
        return subprocess.Popen(cmd, stderr=log, text=True)


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
            return str(reply.read().decode())
    except OSError:
        return ""  # not listening yet


async def test_the_journal_process_copies_each_event_once_and_stops_on_sigterm(
    tmp_path: Path, redis_db: str
) -> None:
    await migrate.upgrade(sqlite_url(tmp_path))  # so this test may read before the child
    ledger = await RedisLedger.open(redis_db, [spec(tpm=100_000)])
    port = closed_port()
    proc = start(tmp_path, redis_db, port)
    durable = DurableLedger(open_engine(sqlite_url(tmp_path)))
    try:
        held = [await ledger.reserve(one(f"r{i}")) for i in range(30)]
        for r in held[:10]:
            await ledger.release(r.reservation_id)  # type: ignore[union-attr]

        async def copied() -> bool:
            return len(await durable.recent_events(limit=1000)) >= 40

        await eventually(copied, timeout=20, what="40 events in SQL")
        events = await durable.recent_events(limit=1000)
        assert len({e.event_id for e in events}) == len(events) == 40
        released = await durable.reservation(held[0].reservation_id)  # type: ignore[union-attr]
        assert released.state == "released"

        async def exported() -> bool:
            return "dispatcher_journal_committed 40.0" in scrape(port)

        await eventually(exported, timeout=20, what="the committed count on /metrics")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        await durable.aclose()
        await ledger.aclose()


def test_the_journal_process_refuses_a_memory_hot_store(tmp_path: Path) -> None:
    result = subprocess.run(
        dispatcher_cmd("journal", "--database-url", sqlite_url(tmp_path)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "hot_store.url" in lines[0]
