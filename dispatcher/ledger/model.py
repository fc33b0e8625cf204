"""Quota ledger domain: pools, costs, reservations and their results.

Plain frozen dataclasses; no protobuf, grpc or redis here. Validation happens at
construction so a bad value is refused with the field it came from
(:class:`~dispatcher.errors.InvalidArgument`) before any bucket is touched.

Units: a *dimension* is one provider limit of a pool (``rpm``, ``tpm``, ``input_tpm``,
``output_tpm``, ``tpd``); each draws on one field of a :class:`Cost`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from dispatcher.errors import InvalidArgument, QuotaExhausted

#: Dimension -> (window seconds, Cost field it consumes).
DIMENSIONS: Mapping[str, tuple[float, str]] = {
    "rpm": (60.0, "requests"),
    "tpm": (60.0, "tokens"),
    "input_tpm": (60.0, "input_tokens"),
    "output_tpm": (60.0, "output_tokens"),
    "tpd": (86400.0, "tokens"),
}

# Reservation ids embed the family so a Redis backend can find the hash tag from the id alone.
_ID_SEP = "#"
_FORBIDDEN_IN_FAMILY = frozenset("{}#, \t\n")
_FORBIDDEN_IN_POOL = frozenset(", \t\n")


#: isinstance against a tuple: ``int | float`` builds a union object on every call, and
#: every Route and Release checks several numbers.
_NUMBER_TYPES = (int, float)


def check_number(value: float, name: str, *, positive: bool = False) -> float:
    """Refuse NaN, infinities and negatives (and zero when ``positive``), naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, _NUMBER_TYPES):
        raise InvalidArgument(name, f"must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise InvalidArgument(name, f"must be finite, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise InvalidArgument(name, f"must be {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


class Mode(StrEnum):
    """How a pool refills."""

    TOKEN_BUCKET = "token_bucket"  # continuous refill (OpenAI, Anthropic, Bedrock)
    FIXED_MINUTE = "fixed_minute"  # resets at each wall-clock window (Azure); tpd at UTC midnight


class FailureMode(StrEnum):
    """What a replica does for a pool when the hot store is unreachable (DESIGN §7)."""

    STATIC_SHARE = "static_share"
    CLOSED = "closed"
    OPEN = "open"


class ReservationState(StrEnum):
    RESERVED = "reserved"
    IN_FLIGHT = "in_flight"
    SETTLED = "settled"
    RELEASED = "released"
    ABANDONED = "abandoned"

    @property
    def open(self) -> bool:
        return self in (ReservationState.RESERVED, ReservationState.IN_FLIGHT)


@dataclass(frozen=True, slots=True)
class Cost:
    """Quota consumed per dimension family; token fields already include output weight."""

    requests: float = 0.0
    tokens: float = 0.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def __sub__(self, other: Cost) -> Cost:
        return Cost(*(a - b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def max(self, other: Cost) -> Cost:
        return Cost(*(max(a, b) for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.requests, self.tokens, self.input_tokens, self.output_tokens)

    def for_dim(self, dim: str) -> float:
        value: float = getattr(self, DIMENSIONS[dim][1])
        return value

    # Spelled out rather than through dataclasses.fields(): every Route and Release decodes
    # costs, and fields() builds its tuple on each call.
    def to_dict(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "tokens": self.tokens,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, float]) -> Cost:
        get = data.get
        return cls(
            float(get("requests", 0.0)),
            float(get("tokens", 0.0)),
            float(get("input_tokens", 0.0)),
            float(get("output_tokens", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class TokenEstimate:
    """What a task is expected to cost: prompt tokens and the max output it may produce."""

    input_tokens: float
    max_output_tokens: float

    def __post_init__(self) -> None:
        check_number(self.input_tokens, "estimate.input_tokens")
        check_number(self.max_output_tokens, "estimate.max_output_tokens")


@dataclass(frozen=True, slots=True)
class Usage:
    """Actual usage reported by a cluster (a total at settle, a delta in report_usage)."""

    requests: float = 1.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0

    def __post_init__(self) -> None:
        for name in ("requests", "input_tokens", "output_tokens"):
            check_number(getattr(self, name), f"usage.{name}")

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.requests + other.requests,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
        )

    def to_dict(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, float]) -> Usage:
        get = data.get
        return cls(
            float(get("requests", 0.0)),
            float(get("input_tokens", 0.0)),
            float(get("output_tokens", 0.0)),
        )


NO_USAGE = Usage(requests=0.0)


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """One provider limit. Capacity of a dimension is ``limit * safety_factor``.

    ``burst`` is how many seconds of refill a token bucket may hold (60 s = one minute's
    capacity; the daily dimension scales it to the day). ``output_weight`` multiplies output
    tokens where a provider charges them extra. ``refund_unused=False`` (Azure) keeps the
    reserved estimate charged even when the task used less.
    """

    id: str
    family: str
    rpm: float | None = None
    tpm: float | None = None
    input_tpm: float | None = None
    output_tpm: float | None = None
    tpd: float | None = None
    mode: Mode = Mode.TOKEN_BUCKET
    burst: float = 60.0
    safety_factor: float = 0.9
    output_weight: float = 1.0
    refund_unused: bool = True
    failure_mode: FailureMode = FailureMode.STATIC_SHARE
    static_share: float = 1.0

    def __post_init__(self) -> None:
        where = f"pools[{self.id}]"
        if not self.id or _FORBIDDEN_IN_POOL & set(self.id):
            raise InvalidArgument(f"{where}.id", "must be non-empty without commas or spaces")
        if not self.family or _FORBIDDEN_IN_FAMILY & set(self.family):
            raise InvalidArgument(f"{where}.family", "must be non-empty without {}#, or spaces")
        for dim in DIMENSIONS:
            value = getattr(self, dim)
            if value is not None:
                check_number(value, f"{where}.{dim}", positive=True)
        check_number(self.burst, f"{where}.burst", positive=True)
        check_number(self.output_weight, f"{where}.output_weight", positive=True)
        check_number(self.static_share, f"{where}.static_share")
        if not 0 < self.safety_factor <= 1:
            raise InvalidArgument(f"{where}.safety_factor", "must be in (0, 1]")
        object.__setattr__(self, "mode", Mode(self.mode))
        object.__setattr__(self, "failure_mode", FailureMode(self.failure_mode))

    def limits(self) -> dict[str, float]:
        """Configured limits of the dimensions this pool enforces."""
        return {d: float(v) for d in DIMENSIONS if (v := getattr(self, d)) is not None}

    def cost(self, estimate: TokenEstimate) -> Cost:
        """Admission cost: one request, input + max output x output_weight tokens."""
        out = estimate.max_output_tokens * self.output_weight
        return Cost(1.0, estimate.input_tokens + out, estimate.input_tokens, out)

    def usage_cost(self, usage: Usage) -> Cost:
        """What actual usage costs in this pool's units."""
        out = usage.output_tokens * self.output_weight
        return Cost(usage.requests, usage.input_tokens + out, usage.input_tokens, out)


class Candidate(NamedTuple):
    """One place a task may run: a cluster (``candidate_id``) and the pools it draws on.

    A named tuple for the reason ``routing.model.Choice`` is one: a Route builds one per
    spillover candidate."""

    candidate_id: str
    pool_ids: tuple[str, ...]
    estimate: TokenEstimate


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    """Reserve for ``request_id`` on the first candidate, in order, that fits now.

    ``request_id`` is the idempotency key: a retry returns the same reservation.
    """

    request_id: str
    candidates: tuple[Candidate, ...]
    lease_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.request_id:
            raise InvalidArgument("request_id", "must be non-empty")
        if not self.candidates:
            raise InvalidArgument("candidates", "at least one candidate is required")
        check_number(self.lease_s, "lease_s", positive=True)
        for i, cand in enumerate(self.candidates):
            if not cand.pool_ids:
                raise InvalidArgument(f"candidates[{i}].pool_ids", "at least one pool")
            if len(set(cand.pool_ids)) != len(cand.pool_ids):
                raise InvalidArgument(f"candidates[{i}].pool_ids", "duplicate pool")


def reservation_id_for(family: str, request_id: str) -> str:
    """The reservation id of ``request_id``: deterministic, so a retry finds the first one.

    Deriving the id (rather than mapping request id -> random id) lets a Redis script name
    the reservation key in KEYS before it runs, as Redis Cluster requires.
    """
    digest = hashlib.sha256(request_id.encode()).hexdigest()[:32]
    return f"{family}{_ID_SEP}{digest}"


def family_of(reservation_id: str) -> str | None:
    """The quota family a reservation id belongs to, or None if it is not one of ours."""
    family, sep, digest = reservation_id.rpartition(_ID_SEP)
    return family if sep and family and len(digest) == 32 else None


@dataclass(frozen=True, slots=True)
class Reservation:
    """Quota held for one task. ``replayed`` marks an idempotent repeat of an earlier call."""

    reservation_id: str
    request_id: str
    candidate_index: int
    candidate_id: str
    pool_ids: tuple[str, ...]
    cost: Mapping[str, Cost]
    state: ReservationState
    lease_expires_at: float
    created_at: float
    spilled_from: str | None = None
    usage: Usage = NO_USAGE
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Denial:
    """No candidate fits now.

    ``retry_after`` is the earliest time (seconds from now) any candidate could fit, or None
    when ``never_fits``: every candidate costs more than its pools can ever hold, so retrying
    is pointless. ``reasons`` maps candidate id to why it was refused.
    """

    retry_after: float | None
    reasons: Mapping[str, str] = field(default_factory=dict)
    never_fits: bool = False

    def to_error(self) -> InvalidArgument | QuotaExhausted:
        """The error to raise for this denial (never_fits is the caller's mistake)."""
        if self.never_fits:
            detail = "; ".join(f"{k}: {v}" for k, v in self.reasons.items())
            return InvalidArgument("estimate", f"never fits any candidate ({detail})")
        return QuotaExhausted(self.retry_after or 0.0, self.reasons)


@dataclass(frozen=True, slots=True)
class SettleResult:
    """Outcome of settle: what each pool was finally charged and the adjustment made now.

    ``adjustment`` is charged minus what was held before settle (negative = refund).
    ``late`` marks a settle after the lease was abandoned; ``replayed`` a repeated settle.
    """

    reservation: Reservation
    outcome: str
    charged: Mapping[str, Cost]
    adjustment: Mapping[str, Cost]
    late: bool = False
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Observation:
    """What a provider said about a pool (rate-limit headers, or a 429).

    Any limit/remaining/reset value that is None, negative (``-1``) or not finite is
    unknown and ignored. ``observed_at`` is unix seconds on the observer's clock.
    """

    observed_at: float
    limit_requests: float | None = None
    remaining_requests: float | None = None
    reset_requests_s: float | None = None
    limit_tokens: float | None = None
    remaining_tokens: float | None = None
    reset_tokens_s: float | None = None
    rate_limited: bool = False
    retry_after_s: float | None = None

    def __post_init__(self) -> None:
        check_number(self.observed_at, "observation.observed_at")

    def known(self, name: str) -> float | None:
        value = getattr(self, name)
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value) if math.isfinite(value) and value >= 0 else None


@dataclass(frozen=True, slots=True)
class DimSnapshot:
    """One dimension of a pool. ``remaining`` is never negative; ``debt`` is what usage
    beyond reservations has overdrawn. ``refill_in`` is seconds until the bucket is full."""

    limit: float
    effective_limit: float
    capacity: float
    used: float
    reserved: float
    remaining: float
    debt: float
    refill_in: float
    observed_limit: float | None = None  # the provider's limit, while below the configured one


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    pool_id: str
    at: float
    blocked_until: float | None
    dims: Mapping[str, DimSnapshot]
    observed_at: float | None = None  # the last provider observation applied, if any
