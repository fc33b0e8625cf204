"""Small builders for ledger tests."""

from __future__ import annotations

from typing import Any

from dispatcher.ledger.model import Candidate, PoolSpec, ReserveRequest, TokenEstimate


def spec(pool_id: str = "p1", family: str = "fam", **kw: Any) -> PoolSpec:
    """A pool with safety factor 1 unless given, so capacities are round numbers."""
    kw.setdefault("safety_factor", 1.0)
    return PoolSpec(pool_id, family, **kw)


def cand(cid: str, *pools: str, tokens: float = 100, out: float = 0) -> Candidate:
    return Candidate(cid, pools, TokenEstimate(tokens, out))


def req(request_id: str, *cands: Candidate, lease: float = 60.0) -> ReserveRequest:
    return ReserveRequest(request_id, cands, lease)


def one(
    request_id: str, pool: str = "p1", tokens: float = 100, out: float = 0, **kw: Any
) -> ReserveRequest:
    return req(request_id, cand("c1", pool, tokens=tokens, out=out), **kw)
