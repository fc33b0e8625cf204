"""What the ledger bench concludes from the records: admitted ÷ capacity over every span, the
utilisation, and the event-by-event match of what replicas did against the journal and SQL.

Capacity of a token bucket over a span of ``s`` seconds is the most it may admit then:
``B + r * s`` with ``B = limit * safety_factor * burst / 60`` (it may start full) and
``r = limit * safety_factor / 60`` per second. What is *admitted* in a span is the cost of the
RESERVED events in it minus the quota given back in it (released, abandoned before dispatch,
settled below the estimate): refunded quota may rightly be admitted again. Charges beyond a
reservation (debt) are not admissions and are left out, which only lowers the ratio where a
debt was charged; a credit the bucket capped is still subtracted in full, which is why the
bound holds (admitted ≤ B + r·s whenever every admission left the level ≥ 0).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict, deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dispatcher.ledger.model import PoolSpec

WINDOW_S = 60.0
Point = tuple[float, float]  # (server time, tokens admitted (+) or given back (-))


@dataclass(frozen=True)
class Bucket:
    burst: float  # tokens the bucket may hold
    rate: float  # tokens per second

    @classmethod
    def of(cls, spec: PoolSpec) -> Bucket:
        assert spec.tpm is not None
        capacity = spec.tpm * spec.safety_factor
        return cls(capacity * spec.burst / 60.0, capacity / 60.0)

    def most(self, seconds: float) -> float:
        return self.burst + self.rate * seconds


@dataclass(frozen=True)
class Row:
    """One journal event as SQL holds it; ``path`` is healthy (Redis decided) or degraded."""

    event_id: str
    kind: str
    at: float
    rid: str | None
    data: Mapping[str, Any]
    path: str = "healthy"


def rows_from_sql(records: Iterable[Mapping[str, Any]], replayed: Collection[str]) -> list[Row]:
    """SQL's events in time order. ``replayed``: the ids of events a replica decided locally
    during an outage and copied into Redis after it (SQL keys them by that local id, so a
    copy made twice is one row); they are the degraded path."""
    rows = []
    for r in records:
        at = r["at"]
        at = at.timestamp() if isinstance(at, datetime) else float(at)
        path = "degraded" if r["event_id"] in replayed else "healthy"
        rows.append(Row(r["event_id"], r["kind"], at, r["reservation_id"], r["data"], path))
    rows.sort(key=lambda row: (row.at, row.event_id))
    return rows


def flows(rows: Sequence[Row], pools: set[str]) -> dict[tuple[str, str], list[Point]]:
    """Per (path, pool): tokens admitted and given back, at server time."""
    out: dict[tuple[str, str], list[Point]] = defaultdict(list)
    costs: dict[tuple[str, str | None], Mapping[str, Any]] = {}

    def add(row: Row, pool: str, tokens: float) -> None:
        if pool in pools and tokens:
            out[(row.path, pool)].append((row.at, tokens))

    for row in rows:
        d = row.data
        if row.kind == "reserved":
            costs[(row.path, row.rid)] = d["cost"]
            for pool, cost in d["cost"].items():
                add(row, pool, cost["tokens"])
        elif row.kind == "released":
            for pool, cost in d["refunded"].items():
                add(row, pool, -cost["tokens"])
        elif row.kind == "settled":
            for pool, adj in d["adjustment"].items():
                add(row, pool, min(0.0, adj["tokens"]))  # a positive adjustment is debt
        elif row.kind == "abandoned" and d.get("refunded"):
            for pool, cost in costs.get((row.path, row.rid), {}).items():
                add(row, pool, -cost["tokens"])
    return out


def _aggregate(points: Sequence[Point]) -> list[Point]:
    """One point per instant: a script's batch shares one server time."""
    merged: list[Point] = []
    for t, a in sorted(points):
        if merged and merged[-1][0] == t:
            merged[-1] = (t, merged[-1][1] + a)
        else:
            merged.append((t, a))
    return merged


@dataclass(frozen=True)
class Worst:
    ratio: float
    start: float
    seconds: float
    admitted: float
    capacity: float


def _best_window(
    ts: Sequence[float], prefix: Sequence[float], bucket: Bucket, rho: float, window: float
) -> tuple[float, int, int]:
    """max over spans [t_i, t_j], t_j - t_i <= window, of admitted - rho * capacity."""
    slope = rho * bucket.rate
    best, arg = -math.inf, (0, 0)
    dq: deque[int] = deque()

    def key(i: int) -> float:
        return prefix[i] - slope * ts[i]

    for j in range(len(ts)):
        while dq and key(dq[-1]) >= key(j):
            dq.pop()
        dq.append(j)
        while ts[j] - ts[dq[0]] > window:
            dq.popleft()
        i = dq[0]
        value = prefix[j + 1] - slope * ts[j] - key(i) - rho * bucket.burst
        if value > best:
            best, arg = value, (i, j)
    return best, arg[0], arg[1]


def worst_span(points: Sequence[Point], bucket: Bucket, window: float = WINDOW_S) -> Worst:
    """The span of at most ``window`` seconds with the highest admitted ÷ capacity
    (Dinkelbach's iteration over an O(n) sliding-window maximum; exact)."""
    merged = _aggregate(points)
    if not merged:
        return Worst(0.0, 0.0, 0.0, 0.0, bucket.burst)
    ts = [t for t, _ in merged]
    prefix = [0.0]
    for _, a in merged:
        prefix.append(prefix[-1] + a)
    rho, worst = 0.0, Worst(0.0, ts[0], 0.0, 0.0, bucket.burst)
    for _ in range(100):
        value, i, j = _best_window(ts, prefix, bucket, rho, window)
        admitted, span = prefix[j + 1] - prefix[i], ts[j] - ts[i]
        ratio = admitted / bucket.most(span)
        if ratio > worst.ratio:
            worst = Worst(ratio, ts[i], span, admitted, bucket.most(span))
        if value <= 1e-9 * max(1.0, bucket.burst) or ratio <= rho:
            break
        rho = ratio
    return worst


def over_capacity(
    rows: Sequence[Row], specs: Mapping[str, PoolSpec], path: str | None
) -> tuple[float, dict[str, Any] | None]:
    """Highest admitted ÷ capacity over every pool and span ≤ 60 s; ``path`` None = both."""
    best: tuple[float, dict[str, Any] | None] = (0.0, None)
    per_path = flows(rows, set(specs))
    by_pool: dict[str, list[Point]] = defaultdict(list)
    for (p, pool), points in per_path.items():
        if path is None or p == path:
            by_pool[pool].extend(points)
    for pool, points in sorted(by_pool.items()):
        worst = worst_span(points, Bucket.of(specs[pool]))
        if best[1] is None or worst.ratio > best[0]:
            where = {
                "pool": pool,
                "seconds": round(worst.seconds, 3),
                "admitted_tokens": round(worst.admitted, 1),
                "capacity_tokens": round(worst.capacity, 1),
            }
            best = (worst.ratio, where)
    return best


def utilisation(
    rows: Sequence[Row], specs: Mapping[str, PoolSpec], begin: float, end: float
) -> tuple[float, float]:
    """(all pools, the least used pool): admitted during [begin, end] ÷ the most the bucket
    may admit in that span."""
    admitted: dict[str, float] = dict.fromkeys(specs, 0.0)
    for (_, pool), points in flows(rows, set(specs)).items():
        admitted[pool] += sum(a for t, a in points if begin <= t <= end)
    most = {p: Bucket.of(s).most(end - begin) for p, s in specs.items()}
    total = sum(admitted.values()) / sum(most.values())
    return total, min(admitted[p] / most[p] for p in specs)


@dataclass(frozen=True)
class Match:
    """Events the replicas reported against the events the journal holds."""

    reported: int
    lost: int  # reported, absent from the journal
    unreported_killed: int  # in the journal, made by the killed replica
    unconfirmed: int  # in the journal, from calls whose answer never arrived (timeouts)
    duplicated: int  # the same local event replayed into Redis more than once


def match(
    reported: Iterable[tuple[str, str]],
    journal: Sequence[tuple[str, str | None, Mapping[str, Any], str | None]],
    victim: int | None,
) -> Match:
    """``journal``: (kind, reservation id, data, origin) per entry, in journal order."""
    done = Counter(reported)
    seen_origins: set[str] = set()
    held: Counter[tuple[str, str]] = Counter()
    requests: dict[str, str] = {}
    duplicated = 0
    for kind, rid, data, origin in journal:
        if origin is not None:
            if origin in seen_origins:
                duplicated += 1
                continue
            seen_origins.add(origin)
        if rid is None:
            continue
        if kind == "reserved":
            requests.setdefault(rid, str(data.get("request_id", "")))
        held[(kind, rid)] += 1
    killed = unconfirmed = 0
    for (kind, rid), n in (held - done).items():
        by_victim = victim is not None and requests.get(rid, "").startswith(f"{victim}.")
        if by_victim and kind != "abandoned":  # the victim ran no sweeper
            killed += n
        else:
            unconfirmed += n
    lost = sum((done - held).values())
    return Match(sum(done.values()), lost, killed, unconfirmed, duplicated)
