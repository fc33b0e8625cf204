"""Routing policies, one module each, behind the ``Policy`` protocol (``base.py``).

``policy_from_name("p2c")`` builds a fresh instance (policies with rotation state must not be
shared between engines).
"""

from __future__ import annotations

from collections.abc import Callable

from dispatcher.routing.policies.base import Policy
from dispatcher.routing.policies.least_outstanding import LeastOutstanding
from dispatcher.routing.policies.p2c import PowerOfTwo
from dispatcher.routing.policies.rendezvous import Rendezvous
from dispatcher.routing.policies.round_robin import RoundRobin
from dispatcher.routing.policies.weighted_round_robin import WeightedRoundRobin

DEFAULT_POLICY = "p2c"

POLICIES: dict[str, Callable[[], Policy]] = {
    "round_robin": RoundRobin,
    "weighted_round_robin": WeightedRoundRobin,
    "least_outstanding": LeastOutstanding,
    "p2c": PowerOfTwo,
    "rendezvous": Rendezvous,
}


def policy_from_name(name: str) -> Policy:
    """A new policy instance; ``KeyError`` names the unknown policy."""
    try:
        return POLICIES[name]()
    except KeyError:
        raise KeyError(f"unknown routing policy {name!r}; known: {', '.join(POLICIES)}") from None


__all__ = [
    "DEFAULT_POLICY",
    "POLICIES",
    "LeastOutstanding",
    "Policy",
    "PowerOfTwo",
    "Rendezvous",
    "RoundRobin",
    "WeightedRoundRobin",
    "policy_from_name",
]
