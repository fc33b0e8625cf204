"""The ``Policy`` protocol every routing policy implements, and helpers they share."""

from __future__ import annotations

from random import Random
from typing import Protocol

from dispatcher.routing.model import Request
from dispatcher.routing.target import Eligible, Target


class Policy(Protocol):
    """Orders eligible targets by preference; the ledger reserves quota down the list.

    ``limit`` bounds the list (spillover depth) so a policy need not order every cluster.
    Policies are synchronous and pure apart from their own rotation state and ``rng``.
    """

    name: str

    def order(
        self, eligible: Eligible, request: Request, rng: Random, limit: int
    ) -> list[Target]: ...


def rotation(
    targets: list[Target], start: int, limit: int, skip: tuple[Target, ...] = ()
) -> list[Target]:
    """Up to ``limit`` targets from ``start`` onwards (wrapping), leaving out ``skip``."""
    n = len(targets)
    out: list[Target] = []
    for offset in range(min(n, limit + len(skip))):
        target = targets[(start + offset) % n]
        if target not in skip:
            out.append(target)
            if len(out) == limit:
                break
    return out
