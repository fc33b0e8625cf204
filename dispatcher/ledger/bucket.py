"""Bucket arithmetic of one pool, in memory: the reference the Lua scripts mirror.

Each enforced dimension keeps a ``level`` (what may still be admitted; negative = debt) and
the time ``t`` it was last brought up to date. Refill is lazy: :func:`refresh` credits what
accrued since ``t``. A token bucket refills ``capacity / window`` per second up to
``capacity * burst / 60``; a fixed window refills to ``capacity`` at each window boundary,
carrying debt over (a provider that was overdrawn delays the next window too).

Nothing here takes a lock: callers run each decision as one synchronous critical section.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dispatcher.ledger.model import (
    DIMENSIONS,
    Candidate,
    Cost,
    DimSnapshot,
    Mode,
    Observation,
    PoolSnapshot,
    PoolSpec,
)

#: Fraction of the gap closed when a provider reports more remaining than we think (§7.3).
RAISE_FRACTION = 0.25


@dataclass(slots=True)
class DimState:
    limit: float  # configured (config file, then set_limits)
    level: float
    t: float
    observed: float | None = None  # provider-reported limit, kept only while below `limit`
    held: float = 0.0  # cost held by open reservations


@dataclass(slots=True)
class PoolState:
    spec: PoolSpec
    dims: dict[str, DimState] = field(default_factory=dict)
    blocked_until: float = 0.0
    observed_at: float = -math.inf

    @classmethod
    def fresh(cls, spec: PoolSpec, now: float) -> PoolState:
        """A full pool."""
        pool = cls(spec)
        for dim, limit in spec.limits().items():
            pool.dims[dim] = DimState(limit, 0.0, now)
            pool.dims[dim].level = max_level(pool, dim)
        return pool


def capacity(pool: PoolState, dim: str) -> float:
    st = pool.dims[dim]
    effective = st.limit if st.observed is None else min(st.limit, st.observed)
    return effective * pool.spec.safety_factor


def max_level(pool: PoolState, dim: str) -> float:
    cap = capacity(pool, dim)
    return cap if pool.spec.mode is Mode.FIXED_MINUTE else cap * pool.spec.burst / 60.0


def _rate(pool: PoolState, dim: str) -> float:
    return capacity(pool, dim) / DIMENSIONS[dim][0]


def refresh(pool: PoolState, now: float) -> None:
    """Credit the refill accrued since each dimension's ``t`` (never for a clock step back)."""
    for dim, st in pool.dims.items():
        if now <= st.t:
            continue
        top = max_level(pool, dim)
        if pool.spec.mode is Mode.FIXED_MINUTE:
            window = DIMENSIONS[dim][0]
            passed = math.floor(now / window) - math.floor(st.t / window)
            if passed > 0:
                st.level = min(top, min(st.level, 0.0) + passed * capacity(pool, dim))
        else:
            st.level = min(top, st.level + _rate(pool, dim) * (now - st.t))
        st.t = now


def _wait(pool: PoolState, dim: str, need: float, now: float) -> float:
    """Seconds until ``need`` fits in ``dim`` (assumes it fits in an empty bucket)."""
    st = pool.dims[dim]
    if st.level >= need:
        return 0.0
    if pool.spec.mode is Mode.TOKEN_BUCKET:
        return (need - st.level) / _rate(pool, dim)
    window, cap = DIMENSIONS[dim][0], capacity(pool, dim)
    next_start = (math.floor(now / window) + 1) * window
    next_level = min(cap, min(st.level, 0.0) + cap)
    extra = max(0, math.ceil((need - next_level) / cap))
    return next_start - now + extra * window


@dataclass(frozen=True, slots=True)
class Fit:
    """Whether a cost fits a pool now: wait 0 = yes; ``never`` = cannot ever fit."""

    wait: float
    reason: str | None = None
    never: bool = False


def fit(pool: PoolState, cost: Cost, now: float) -> Fit:
    """Check (without debiting) whether ``cost`` fits now; the pool must be refreshed."""
    pid = pool.spec.id
    waits: list[Fit] = []
    for dim in pool.dims:
        need, top = cost.for_dim(dim), max_level(pool, dim)
        if need > top:
            return Fit(math.inf, f"pool {pid}: never_fits {dim} ({need:g} > {top:g})", True)
        wait = _wait(pool, dim, need, now)
        if wait > 0:
            waits.append(Fit(wait, f"pool {pid}: {dim} exhausted"))
    if pool.blocked_until > now:
        waits.append(Fit(pool.blocked_until - now, f"pool {pid}: blocked by provider 429"))
    return max(waits, key=lambda f: f.wait, default=Fit(0.0))


def choose(
    pools: Mapping[str, PoolState],
    costs: Sequence[Mapping[str, Cost]],
    candidates: Sequence[Candidate],
    now: float,
) -> tuple[int, dict[str, str], float | None]:
    """First candidate whose pools all fit; else -1, reasons, and the earliest retry.

    The retry is None when no candidate can ever fit (every one has a ``never_fits`` pool).
    """
    reasons: dict[str, str] = {}
    retry: float | None = None
    for index, cand in enumerate(candidates):
        fits = [fit(pools[p], costs[index][p], now) for p in cand.pool_ids]
        worst = max(fits, key=lambda f: f.wait)
        if worst.wait == 0:
            return index, reasons, None
        reasons[cand.candidate_id] = "; ".join(f.reason for f in fits if f.reason)
        if not worst.never:
            retry = worst.wait if retry is None else min(retry, worst.wait)
    return -1, reasons, retry


def debit(pool: PoolState, cost: Cost, *, hold: bool) -> None:
    for dim, st in pool.dims.items():
        st.level -= cost.for_dim(dim)
        if hold:
            st.held += cost.for_dim(dim)


def credit(pool: PoolState, cost: Cost) -> None:
    """Give quota back, never beyond a full bucket. A negative cost charges more (debt)."""
    for dim, st in pool.dims.items():
        st.level = min(max_level(pool, dim), st.level + cost.for_dim(dim))


def unhold(pool: PoolState, cost: Cost) -> None:
    for dim, st in pool.dims.items():
        st.held = max(0.0, st.held - cost.for_dim(dim))


def _clamp(pool: PoolState) -> None:
    for dim, st in pool.dims.items():
        st.level = min(st.level, max_level(pool, dim))


_OBSERVED = (("rpm", "requests"), ("tpm", "tokens"))


def observe(pool: PoolState, obs: Observation, now: float) -> dict[str, object] | None:
    """Apply a provider observation (§7.3); None (no-op) when older than the last applied.

    Our bucket models the provider's scaled by ``safety_factor``, so ``remaining`` maps to
    ``remaining * safety_factor``. A 429 without retry-after empties the observed dimensions.
    """
    if obs.observed_at < pool.observed_at:
        return None
    refresh(pool, now)
    pool.observed_at = obs.observed_at
    for dim, unit in _OBSERVED:
        st = pool.dims.get(dim)
        if st is None:
            continue
        limit = obs.known(f"limit_{unit}")
        if limit:
            st.observed = limit if limit < st.limit else None
            _clamp(pool)
        remaining = obs.known(f"remaining_{unit}")
        if obs.rate_limited and obs.known("retry_after_s") is None:
            remaining = 0.0
        if remaining is not None:
            target = min(remaining * pool.spec.safety_factor, max_level(pool, dim))
            gap = target - st.level
            st.level += gap if gap < 0 else gap * RAISE_FRACTION
    retry_after = obs.known("retry_after_s")
    if obs.rate_limited and retry_after is not None:
        until = min(obs.observed_at, now) + retry_after
        pool.blocked_until = max(pool.blocked_until, until)
    return {
        "observed_at": obs.observed_at,
        "levels": {d: st.level for d, st in pool.dims.items()},
        "blocked_until": pool.blocked_until,
    }


def set_limits(pool: PoolState, limits: Mapping[str, float | None], now: float) -> None:
    """Change configured limits; None stops enforcing a dimension. A new one starts full."""
    refresh(pool, now)
    for dim, limit in limits.items():
        if limit is None:
            pool.dims.pop(dim, None)
        elif dim in pool.dims:
            pool.dims[dim].limit = limit
        else:
            pool.dims[dim] = DimState(limit, 0.0, now)
            pool.dims[dim].level = max_level(pool, dim)
    # Keep the canonical order: it decides which reason a tie reports, as in the Lua scripts.
    pool.dims = {d: pool.dims[d] for d in DIMENSIONS if d in pool.dims}
    _clamp(pool)


def _refill_in(pool: PoolState, dim: str, now: float) -> float:
    top = max_level(pool, dim)
    return _wait(pool, dim, top, now) if pool.dims[dim].level < top else 0.0


def snapshot(pool: PoolState, now: float) -> PoolSnapshot:
    refresh(pool, now)
    dims = {}
    for dim, st in pool.dims.items():
        top = max_level(pool, dim)
        dims[dim] = DimSnapshot(
            limit=st.limit,
            effective_limit=capacity(pool, dim) / pool.spec.safety_factor,
            capacity=capacity(pool, dim),
            used=max(0.0, top - st.level),
            reserved=st.held,
            remaining=max(0.0, st.level),
            debt=max(0.0, -st.level),
            refill_in=_refill_in(pool, dim, now),
            observed_limit=st.observed,
        )
    blocked = pool.blocked_until if pool.blocked_until > now else None
    observed = pool.observed_at if math.isfinite(pool.observed_at) else None
    return PoolSnapshot(pool.spec.id, now, blocked, dims, observed)
