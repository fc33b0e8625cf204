"""Weighted rendezvous (highest-random-weight) hashing with bounded load, for sessions.

Each (key, cluster) pair gets a stable pseudo-random ``u`` in (0, 1); the cluster with the
highest ``-weight / ln(u)`` wins, so shares follow weights and adding or removing a cluster
moves only the keys that cluster wins or held (minimal disruption). Bounded load (the
consistent-hashing-with-bounded-loads idea) sends a key past any cluster already above
``bound`` x the mean normalised load, so a burst of new sessions cannot pile onto one cluster.
The hash is blake2b, not ``hash()``: every replica and every restart must agree.
"""

from __future__ import annotations

import math
from hashlib import blake2b
from random import Random

from dispatcher.routing.model import Request
from dispatcher.routing.target import Eligible, Target

_SCALE = float(2**64)


def unit_hash(key: str, cluster_id: str) -> float:
    """A stable value in (0, 1) for the pair."""
    digest = blake2b(f"{key}\x00{cluster_id}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / _SCALE


def rendezvous_score(key: str, target: Target) -> float:
    """Higher wins; ``-w / ln(u)`` makes a cluster win with probability ∝ its weight."""
    return -target.weight / math.log(unit_hash(key, target.cluster_id))


def rendezvous_order(key: str, targets: list[Target], bound: float = 1.25) -> list[Target]:
    """All targets by rendezvous score; those above the load bound go after the rest."""
    ranked = sorted(targets, key=lambda t: rendezvous_score(key, t), reverse=True)
    total_weight = sum(t.weight for t in targets)
    if total_weight <= 0 or bound <= 0:
        return ranked
    mean = (sum(t.in_flight() for t in targets) + 1.0) / total_weight
    within = [t for t in ranked if t.in_flight() + 1.0 <= math.ceil(bound * mean * t.weight)]
    over = [t for t in ranked if t.in_flight() + 1.0 > math.ceil(bound * mean * t.weight)]
    return within + over


class Rendezvous:
    """Places by ``request.session_key`` (else route + agent): same key, same cluster."""

    name = "rendezvous"

    def __init__(self, bound: float = 1.25) -> None:
        self.bound = bound

    def order(self, eligible: Eligible, request: Request, rng: Random, limit: int) -> list[Target]:
        key = request.session_key or f"{request.route}/{request.agent}"
        return rendezvous_order(key, eligible.targets, self.bound)[:limit]
