"""Cluster ejection after consecutive errors, Envoy outlier-detection style (DESIGN §6).

``consecutive_errors`` failures in a row eject a cluster for ``base_ejection`` x (times
ejected), capped at ``max_ejection``, plus up to ``jitter`` of that (so ejected clusters do not
all return in the same second). A success resets the streak; the count of times ejected
decays by one for each ``base_ejection`` period spent healthy after returning (as Envoy does).
The detector never ejects the last cluster that is not ejected: with every cluster bad,
routing somewhere beats routing nowhere, and the engine's panic setting decides the rest.

Usage::

    outliers = OutlierDetector(rng=Random(7))
    ejection = outliers.record("eu-1", ok=False, now=now, healthy=("eu-1", "us-2"))
    outliers.is_ejected("eu-1", now)
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from random import Random


@dataclass(frozen=True, slots=True)
class Ejection:
    cluster_id: str
    at: float
    until: float
    times: int


@dataclass(slots=True)
class _Record:
    streak: int = 0
    times: int = 0
    until: float = float("-inf")
    returned_at: float = float("-inf")


class OutlierDetector:
    """Per-cluster error streaks and ejections; pure apart from ``rng`` (jitter)."""

    def __init__(
        self,
        consecutive_errors: int = 5,
        base_ejection: float = 30.0,
        max_ejection: float = 300.0,
        jitter: float = 0.1,
        rng: Random | None = None,
    ) -> None:
        self.consecutive_errors = consecutive_errors
        self.base_ejection = base_ejection
        self.max_ejection = max_ejection
        self.jitter = jitter
        self._rng = rng or Random()
        self._records: dict[str, _Record] = {}

    def is_ejected(self, cluster_id: str, now: float) -> bool:
        record = self._records.get(cluster_id)
        return record is not None and now < record.until

    def ejection(self, cluster_id: str, now: float) -> tuple[float | None, int]:
        """(until when the cluster is ejected, or None; how many times it has been)."""
        record = self._records.get(cluster_id)
        if record is None:
            return None, 0
        return (record.until if now < record.until else None), record.times

    def next_change(self, now: float) -> float:
        """The earliest time after ``now`` an ejected cluster returns (``inf``: none)."""
        pending = [r.until for r in self._records.values() if r.until > now]
        return min(pending, default=float("inf"))

    def record(
        self, cluster_id: str, ok: bool, now: float, clusters: Collection[str]
    ) -> Ejection | None:
        """Count one outcome; ``clusters`` are all the clusters in rotation (for the last-one
        rule). Returns the ejection it caused, if any."""
        record = self._records.setdefault(cluster_id, _Record())
        self._settle_return(record, now)
        if ok:
            record.streak = 0
            return None
        if now < record.until:
            return None
        record.streak += 1
        if record.streak < self.consecutive_errors:
            return None
        others_in = [c for c in clusters if c != cluster_id and not self.is_ejected(c, now)]
        if not others_in:
            return None  # never eject the last healthy cluster; the streak stays for later
        record.streak = 0
        record.times += 1
        duration = min(self.max_ejection, self.base_ejection * record.times)
        duration += duration * self.jitter * self._rng.random()
        record.until = now + duration
        return Ejection(cluster_id, now, record.until, record.times)

    def _settle_return(self, record: _Record, now: float) -> None:
        if record.until == float("-inf") or now < record.until:
            return
        # Back in rotation: decay the multiplier for time spent healthy since returning.
        if record.returned_at < record.until:
            record.returned_at = record.until
        healthy_for = now - record.returned_at
        decay = int(healthy_for // self.base_ejection)
        if decay:
            record.times = max(0, record.times - decay)
            record.returned_at += decay * self.base_ejection
