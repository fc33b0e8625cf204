"""Request checks shared by every backend, run before any store is touched."""

from __future__ import annotations

from collections.abc import Mapping

from dispatcher.errors import InvalidArgument, NotFound
from dispatcher.ledger.model import DIMENSIONS, Cost, PoolSpec, ReserveRequest, check_number


def pool_spec(specs: Mapping[str, PoolSpec], pool_id: str) -> PoolSpec:
    try:
        return specs[pool_id]
    except KeyError:
        raise NotFound("pool", pool_id) from None


def request_family(request: ReserveRequest, specs: Mapping[str, PoolSpec]) -> str:
    """The one quota family every candidate of ``request`` draws on.

    All candidates of one request must draw on one family: a reservation is decided in one
    atomic step, and in Redis that step can only touch one hash slot.
    """
    families = {pool_spec(specs, pid).family for c in request.candidates for pid in c.pool_ids}
    if len(families) > 1:
        raise InvalidArgument(
            "candidates", f"pools span quota families {sorted(families)}; one family per request"
        )
    return families.pop()


def plan(
    request: ReserveRequest, specs: Mapping[str, PoolSpec]
) -> tuple[str, list[dict[str, Cost]]]:
    """The request's quota family and each candidate's cost per pool (the Redis backend
    needs only the family: its script prices the candidates itself)."""
    family = request_family(request, specs)
    costs = [
        {pid: specs[pid].cost(cand.estimate) for pid in cand.pool_ids}
        for cand in request.candidates
    ]
    return family, costs


def check_limits(limits: Mapping[str, float | None]) -> dict[str, float | None]:
    """Validated limits: known dimension names, finite positive values or None."""
    checked: dict[str, float | None] = {}
    for dim, value in limits.items():
        if dim not in DIMENSIONS:
            raise InvalidArgument(f"limits.{dim}", f"unknown dimension; one of {list(DIMENSIONS)}")
        checked[dim] = (
            None if value is None else check_number(value, f"limits.{dim}", positive=True)
        )
    return checked


def check_outcome(outcome: str) -> str:
    if not isinstance(outcome, str) or not outcome:
        raise InvalidArgument("outcome", "must be a non-empty string")
    return outcome
