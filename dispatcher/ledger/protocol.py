"""The hot-store ledger interface every backend implements (memory, Redis).

Each method is one atomic decision plus its journal event (DESIGN §7). Errors are the typed
ones of :mod:`dispatcher.errors`: InvalidArgument (bad field), NotFound (unknown pool or
reservation), FailedPrecondition (wrong state), BackendUnavailable (hot store down).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from dispatcher.ledger.events import EventKind
from dispatcher.ledger.model import (
    Denial,
    Observation,
    PoolSnapshot,
    Reservation,
    ReserveRequest,
    SettleResult,
    Usage,
)


class Ledger(Protocol):
    async def reserve(self, request: ReserveRequest) -> Reservation | Denial:
        """Hold the estimated cost on the first candidate that fits (spillover), or deny.

        Idempotent on ``request.request_id``: a retry returns the first reservation with
        ``replayed=True`` (in its current state) and reserves nothing more.
        """
        ...

    async def ack_dispatched(self, reservation_id: str) -> Reservation:
        """RESERVED -> IN_FLIGHT: the provider will be charged; expiry no longer refunds."""
        ...

    async def extend(self, reservation_id: str, lease_s: float) -> Reservation:
        """Lease now expires ``lease_s`` from now (open reservations only)."""
        ...

    async def report_usage(self, reservation_id: str, delta: Usage) -> Reservation:
        """Interim usage of a long task; beyond the reservation it is charged now, as debt.

        Usage implies the provider was called, so a RESERVED reservation becomes IN_FLIGHT.
        """
        ...

    async def settle(self, reservation_id: str, usage: Usage, outcome: str) -> SettleResult:
        """Final usage (a total). Idempotent: a repeat returns the first result, replayed.

        Accepted after the lease was abandoned (``late=True``): the difference is charged.
        """
        ...

    async def release(self, reservation_id: str) -> Reservation:
        """Give back a RESERVED reservation that was never dispatched (idempotent)."""
        ...

    async def get(self, reservation_id: str) -> Reservation:
        """The reservation as it is now."""
        ...

    async def expire_due(self, limit: int = 1000) -> list[str]:
        """Abandon up to ``limit`` open reservations whose lease has passed, by the store's
        clock; RESERVED ones are refunded, IN_FLIGHT ones not. Returns their ids."""
        ...

    async def reconcile(self, pool_id: str, observation: Observation) -> bool:
        """Apply a provider observation; False (no-op) when older than the last applied."""
        ...

    async def snapshot(self, pool_id: str) -> PoolSnapshot:
        """Limit, used, reserved, remaining, refill time and block of one pool."""
        ...

    async def set_limits(self, pool_id: str, limits: Mapping[str, float | None]) -> PoolSnapshot:
        """Change configured limits by dimension name; None stops enforcing a dimension."""
        ...

    async def record(
        self,
        kind: EventKind,
        reservation_id: str | None,
        pool_ids: Sequence[str],
        data: Mapping[str, Any],
    ) -> None:
        """Journal an event that changes no quota (a breaker transition, a session handover)
        through the same journal as every mutation, stamped with the store's clock."""
        ...

    async def aclose(self) -> None:
        """Release connections and background tasks."""
        ...
