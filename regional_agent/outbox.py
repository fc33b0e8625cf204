"""The on-disk outbox: usage reports stay here until the dispatcher acks them durable.

A row is written (and committed) before the worker's HTTP call returns, and deleted only
when an Ack lists its report id in ``durable_report_ids`` (DESIGN §7.4: nothing lost).
Redelivery is idempotent on ``report_id``, so a row may be sent any number of times.
A row the dispatcher rejects as malformed is set aside (``dead``), not resent forever.

SQLite calls are synchronous: each is a sub-millisecond local write in WAL mode, cheaper
than a thread hop at the rates one cluster produces.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable
from pathlib import Path

from dispatcher.v1 import agent_pb2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    report_id TEXT NOT NULL UNIQUE,
    payload BLOB NOT NULL,
    dead TEXT
)
"""


class Outbox:
    """``add`` a usage report, ``pending`` to send, ``mark_durable`` once acked."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a report the worker was told is stored must survive a power cut.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)

    def add(self, report: agent_pb2.UsageReport) -> str:
        """Store ``report`` under a fresh report id (returned); durable when this returns."""
        report_id = report.report_id or uuid.uuid4().hex
        report.report_id = report_id
        self._db.execute(
            "INSERT INTO usage (report_id, payload) VALUES (?, ?)",
            (report_id, report.SerializeToString()),
        )
        return report_id

    def pending(self, limit: int = 500, skip: Iterable[str] = ()) -> list[agent_pb2.UsageReport]:
        """Oldest live rows first, leaving out ids in ``skip`` (sent, awaiting their ack)."""
        skipped = set(skip)
        rows = self._db.execute(
            "SELECT payload FROM usage WHERE dead IS NULL ORDER BY seq LIMIT ?",
            (limit + len(skipped),),
        )
        reports = []
        for (payload,) in rows:
            report = agent_pb2.UsageReport.FromString(payload)
            if report.report_id not in skipped:
                reports.append(report)
        return reports[:limit]

    def mark_durable(self, report_ids: Iterable[str]) -> int:
        ids = [(rid,) for rid in report_ids]
        before = self._db.total_changes
        self._db.execute("BEGIN")  # one fsync for the whole ack, not one per row
        try:
            self._db.executemany("DELETE FROM usage WHERE report_id = ?", ids)
        finally:
            self._db.execute("COMMIT")
        return self._db.total_changes - before

    def set_aside(self, report_id: str, reason: str) -> None:
        self._db.execute("UPDATE usage SET dead = ? WHERE report_id = ?", (reason, report_id))

    def count(self, *, dead: bool = False) -> int:
        where = "dead IS NOT NULL" if dead else "dead IS NULL"
        (n,) = self._db.execute(f"SELECT count(*) FROM usage WHERE {where}").fetchone()
        return int(n)

    def close(self) -> None:
        self._db.close()
