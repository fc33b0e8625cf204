"""Least outstanding: deterministic argmin of ``(estimated_in_flight + 1) / weight``.

Exact with fresh data, but every replica reading the same stale heartbeat picks the same
cluster (the herd of DESIGN §6.3), so it is not the default.
"""

from __future__ import annotations

from random import Random

from dispatcher.routing.model import Request
from dispatcher.routing.target import Eligible, Target


def outstanding(target: Target) -> float:
    return (target.in_flight() + 1.0) / target.weight


class LeastOutstanding:
    name = "least_outstanding"

    def order(self, eligible: Eligible, request: Request, rng: Random, limit: int) -> list[Target]:
        return sorted(eligible.targets, key=outstanding)[:limit]
