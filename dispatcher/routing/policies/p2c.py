"""Weighted power-of-two-choices, lane-aware: the default policy (DESIGN §6.3).

Two clusters are drawn with probability proportional to their weight, and the one with the
lower score wins. Sampling (not scanning) keeps a decision O(log n) in clusters and, because
each replica draws differently, replicas sharing one stale heartbeat do not herd.
"""

from __future__ import annotations

from bisect import bisect_right
from random import Random

from dispatcher.routing.lanes import has_room, lane_score, overflow_score
from dispatcher.routing.model import Request
from dispatcher.routing.policies.base import rotation
from dispatcher.routing.target import Eligible, Target

#: Scores of targets whose lane is full are pushed behind every target with room.
FULL_PENALTY = 1e9


def pressure(cpu: float, mem: float, knee: float = 0.8) -> float:
    """1 below the knee, rising linearly to 2 at full CPU or memory: hot clusters get less."""
    hot = max(cpu, mem)
    return 1.0 if hot <= knee else 1.0 + (hot - knee) / (1.0 - knee)


def score(target: Target, lane: str) -> float:
    """Lower is better: the lane-aware load, times pressure, behind all targets with room."""
    if not has_room(target, lane):
        return FULL_PENALTY + overflow_score(target, lane)
    cand = target.candidate
    return lane_score(target, lane) * pressure(cand.cpu, cand.mem)


class PowerOfTwo:
    """``draws`` extra samples are taken only while both picks have a full lane."""

    name = "p2c"

    def __init__(self, extra_draws: int = 2) -> None:
        self.extra_draws = extra_draws

    def order(self, eligible: Eligible, request: Request, rng: Random, limit: int) -> list[Target]:
        targets = eligible.targets
        n = len(targets)
        if n <= 2:
            lane = request.lane
            return sorted(targets, key=lambda t: score(t, lane))[:limit]
        lane = request.lane
        first = self._draw(eligible, rng)
        second = self._draw(eligible, rng, avoid=first)
        a, b = targets[first], targets[second]
        sa, sb = score(a, lane), score(b, lane)
        if sb < sa:
            a, b, sa, sb = b, a, sb, sa
        for _ in range(self.extra_draws):
            if sa < FULL_PENALTY:
                break
            c = targets[self._draw(eligible, rng)]
            sc = score(c, lane)
            if sc < sa and c is not b:
                a, b, sa, sb = c, a, sc, sa
        head = [a, b]
        if limit <= 2:
            return head[:limit]
        return head + rotation(targets, int(rng.random() * n), limit - 2, skip=(a, b))

    @staticmethod
    def _draw(eligible: Eligible, rng: Random, avoid: int = -1) -> int:
        cum = eligible.cum_weights
        total = eligible.total_weight
        last = len(cum) - 1
        for _ in range(4):
            index = min(bisect_right(cum, rng.random() * total), last)
            if index != avoid:
                return index
        # A dominant weight keeps being drawn: take its neighbour rather than loop.
        return (avoid + 1) % len(cum)
