"""Candidate filters (DESIGN §6.2), each with the machine-readable reason Explain shows.

Static filters remove a cluster; two conditions only change its place:

- ``stale`` (no heartbeat for ``stale_after``): kept, scored as fully loaded. When every
  cluster is stale the heartbeats, not the clusters, are the problem: fail open and use the
  last numbers (``Freshness``).
- ``lane_full``: kept at the end of the preference order (the ledger may still spill there).

Ejection alone is subject to panic: if it would leave no candidate, ``fail_open`` routes to
the ejected clusters anyway and ``fail_closed`` routes nowhere.
"""

from __future__ import annotations

from collections.abc import Collection

from dispatcher.routing.model import DRAIN, MAINT, Candidate, Reason


def static_reason(
    candidate: Candidate,
    backend: str,
    version: str,
    ejected: bool,
    blocked_pools: Collection[str] = (),
) -> Reason | None:
    """Why this cluster cannot take (backend, version) at all, or None."""
    if candidate.forbidden:
        return Reason.FORBIDDEN
    if candidate.admin_state == MAINT:
        return Reason.MAINTENANCE
    if candidate.admin_state == DRAIN:
        return Reason.DRAINING
    if candidate.backends and backend not in candidate.backends:
        return Reason.BACKEND_NOT_SERVED
    if not candidate.serves_version(version):
        return Reason.VERSION_NOT_SERVED
    if candidate.weight_percent <= 0 or candidate.slow_start_factor <= 0:
        return Reason.WEIGHT_ZERO
    if candidate.pool_ids and blocked_pools and all(p in blocked_pools for p in candidate.pool_ids):
        return Reason.QUOTA_BLOCKED
    if ejected or candidate.ejected:
        return Reason.EJECTED
    return None
