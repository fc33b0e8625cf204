"""Routing domain: what the engine is given (``Candidate``, ``Request``) and what it answers.

A ``Candidate`` is one cluster as the registry last saw it: frozen facts filled by the caller
from the cluster registry (announce + last heartbeat + admin overrides). The engine wraps each
in a mutable ``Target`` that adds what only this replica knows: its own dispatches and
completions since that heartbeat (``LoadEstimate``) and the effective weight. Policies order
``Target``s; nothing here does I/O.

Lanes and admin states are plain strings with the same values as ``fleet.model.Lane`` and
``fleet.model.AdminState`` (both are ``StrEnum``), so either can be passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, NamedTuple

LIGHT: Final = "light"
STANDARD: Final = "standard"
HEAVY: Final = "heavy"
LANES: Final = (LIGHT, STANDARD, HEAVY)

READY: Final = "ready"
DRAIN: Final = "drain"
MAINT: Final = "maint"

#: Expected durations below this are light tasks, above ``HEAVY_AFTER`` heavy ones (seconds).
LIGHT_BELOW: Final = 1.0
HEAVY_AFTER: Final = 120.0


class Reason(StrEnum):
    """Why a candidate was filtered out or demoted (the Explain API's machine-readable reason)."""

    STALE = "stale"  # kept, but scored as fully loaded
    DRAINING = "draining"
    MAINTENANCE = "maintenance"
    EJECTED = "ejected"
    FORBIDDEN = "forbidden"
    VERSION_NOT_SERVED = "version_not_served"
    BACKEND_NOT_SERVED = "backend_not_served"
    QUOTA_BLOCKED = "quota_blocked"
    LANE_FULL = "lane_full"  # kept at the end of the list: spillover may still use it
    WEIGHT_ZERO = "weight_zero"


class Outcome(StrEnum):
    """The shape of a decision (wire: ``RouteDecision.outcome``, plus ``NO_CANDIDATE``)."""

    ROUTED = "ROUTED"
    FALLBACK = "FALLBACK"
    MAINTENANCE = "MAINTENANCE"
    NO_CANDIDATE = "NO_CANDIDATE"  # the gRPC layer answers RESOURCE_EXHAUSTED


def lane_for(task_class: str | None, expected_duration: float | None) -> str:
    """The lane of a task: its declared class, else from its expected duration, else standard."""
    if task_class:
        return str(task_class)
    if expected_duration is None:
        return STANDARD
    if expected_duration < LIGHT_BELOW:
        return LIGHT
    return HEAVY if expected_duration > HEAVY_AFTER else STANDARD


@dataclass(frozen=True, slots=True)
class Candidate:
    """One cluster as the registry knows it; every field the engine reads arrives here.

    ``lanes`` are slots set aside per lane (the rest are shared); ``lane_in_flight`` is the
    heartbeat's in-flight per lane. ``capacity_weight`` 0 means "use ``slots``";
    ``weight_percent`` is the agent-check override (100 = as declared); ``slow_start_factor``
    (0..1] scales a returning cluster's weight (see ``capacity.slow_start_factor``).
    Empty ``versions`` / ``backends`` mean "serves any".
    """

    cluster_id: str
    region: str = ""
    slots: int = 1
    lanes: Mapping[str, int] = field(default_factory=dict)
    in_flight: int = 0
    lane_in_flight: Mapping[str, int] = field(default_factory=dict)
    heartbeat_at: float = 0.0
    cpu: float = 0.0
    mem: float = 0.0
    admin_state: str = READY
    weight_percent: int = 100
    ejected: bool = False
    forbidden: bool = False
    versions: frozenset[str] = frozenset()
    backends: frozenset[str] = frozenset()
    pool_ids: tuple[str, ...] = ()
    boot_id: str = ""
    capacity_weight: float = 0.0
    slow_start_factor: float = 1.0
    endpoint: str = ""

    def serves_version(self, version: str) -> bool:
        """``auditor`` matches any ``auditor@x``; ``auditor@16.4`` only itself."""
        if not self.versions or version in self.versions:
            return True
        if "@" in version:
            return False
        prefix = version + "@"
        return any(v.startswith(prefix) for v in self.versions)

    def static_key(self) -> tuple[object, ...]:
        """The facts eligibility depends on; a heartbeat that leaves them alone is load only."""
        return (
            self.admin_state,
            self.ejected,
            self.forbidden,
            self.versions,
            self.backends,
            self.pool_ids,
            self.slots,
            tuple(sorted(self.lanes.items())),
            self.capacity_weight,
            self.weight_percent,
            self.slow_start_factor,
        )


#: A decision's ``reasons`` and ``scores`` unless explaining: one shared, read-only mapping.
NOTHING_EXPLAINED: Final[Mapping[str, Any]] = MappingProxyType({})


class Request(NamedTuple):
    """What the caller asks for. ``version`` pins an agent version; none = the agent's current.

    This and the other per-Route records here are named tuples, not frozen dataclasses: as
    immutable, and built in under half the time (a frozen dataclass sets each field through
    ``object.__setattr__``)."""

    route: str
    agent: str = ""
    version: str | None = None
    task_class: str | None = None
    expected_duration: float | None = None
    session_key: str | None = None
    estimate_tokens: int = 0

    @property
    def lane(self) -> str:
        return lane_for(self.task_class, self.expected_duration)

    @property
    def agent_version(self) -> str:
        """``agent@version`` when pinned, else the bare agent name."""
        return f"{self.agent}@{self.version}" if self.version else self.agent


class Choice(NamedTuple):
    """One place the caller may reserve quota at, in preference order (a Route builds one per
    spillover candidate, and decodes one more from its reservation)."""

    cluster_id: str
    backend: str
    version: str
    lane: str


class Decision(NamedTuple):
    """The engine's answer. ``reasons``/``scores`` are filled only when explaining."""

    outcome: Outcome
    choices: tuple[Choice, ...] = ()
    backend: str = ""
    version: str = ""
    lane: str = STANDARD
    reason: str = ""
    message: str = ""
    handover_from: str | None = None
    reasons: Mapping[str, str] = NOTHING_EXPLAINED
    scores: Mapping[str, float] = NOTHING_EXPLAINED

    @property
    def cluster_id(self) -> str | None:
        """The first choice, if any."""
        return self.choices[0].cluster_id if self.choices else None
