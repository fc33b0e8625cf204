"""Capacity-weighted round-robin (smooth, nginx style): shares follow weights, not load."""

from __future__ import annotations

from random import Random

from dispatcher.routing.model import Request
from dispatcher.routing.policies.base import rotation
from dispatcher.routing.target import Eligible, Target


class WeightedRoundRobin:
    name = "weighted_round_robin"

    def __init__(self) -> None:
        self._current: dict[str, float] = {}

    def order(self, eligible: Eligible, request: Request, rng: Random, limit: int) -> list[Target]:
        targets = eligible.targets
        if not targets:
            return []
        current = self._current
        best_index = 0
        best_value = float("-inf")
        for index, target in enumerate(targets):
            value = current.get(target.cluster_id, 0.0) + target.weight
            current[target.cluster_id] = value
            if value > best_value:
                best_index, best_value = index, value
        best = targets[best_index]
        current[best.cluster_id] = best_value - eligible.total_weight
        return rotation(targets, best_index, limit)
