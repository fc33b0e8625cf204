"""Round-robin: deal tasks like cards. A baseline only: it ignores cost and capacity (§1)."""

from __future__ import annotations

from random import Random

from dispatcher.routing.model import Request
from dispatcher.routing.policies.base import rotation
from dispatcher.routing.target import Eligible, Target


class RoundRobin:
    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def order(self, eligible: Eligible, request: Request, rng: Random, limit: int) -> list[Target]:
        targets = eligible.targets
        if not targets:
            return []
        start = self._next % len(targets)
        self._next = start + 1
        return rotation(targets, start, limit)
