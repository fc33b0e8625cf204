"""Fleet domain: what a cluster is, how loaded it is, and what its agent reports.

Plain frozen dataclasses; no protobuf, grpc or redis here. Values a cluster could get wrong
are checked at construction and refused with the wire field they came from
(:class:`~dispatcher.errors.InvalidArgument`), so a bad report never reaches a store.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from dispatcher.errors import InvalidArgument
from dispatcher.ledger.model import check_number

#: ORCA-style free-form metrics: enough for queue depths and per-lane gauges, not a dump.
MAX_NAMED_METRICS = 64
MAX_METRIC_KEY_BYTES = 64
MAX_ID_BYTES = 128
#: Counters are compared in Redis Lua, whose numbers are doubles printed with 14 digits.
MAX_COUNTER = 10**14 - 1


class Lane(StrEnum):
    """Task class a lane of slots is set aside for (wire: ``TaskClass``)."""

    LIGHT = "light"
    STANDARD = "standard"
    HEAVY = "heavy"


class AdminState(StrEnum):
    """Declared availability, HAProxy agent-check style."""

    READY = "ready"
    DRAIN = "drain"
    MAINT = "maint"


def check_id(value: str, name: str) -> str:
    if not value or len(value.encode()) > MAX_ID_BYTES or not value.isprintable():
        raise InvalidArgument(name, f"must be 1..{MAX_ID_BYTES} printable bytes")
    return value


def _check_fraction(value: float, name: str, *, upper: float | None = 1.0) -> None:
    check_number(value, name)
    if upper is not None and value > upper:
        raise InvalidArgument(name, f"must be in 0..{upper:g}, got {value!r}")


@dataclass(frozen=True, slots=True)
class LaneCapacity:
    lane: Lane
    slots: int


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """Static facts a cluster announces; re-announced only when they change."""

    id: str
    region: str
    endpoint: str
    slots: int
    cores: float = 0.0
    memory_bytes: int = 0
    lanes: tuple[LaneCapacity, ...] = ()
    versions: tuple[str, ...] = ()
    backends: tuple[str, ...] = ()
    pool_ids: tuple[str, ...] = ()
    agent_build: str = ""

    def __post_init__(self) -> None:
        check_id(self.id, "cluster_id")
        check_id(self.region, "announce.region")
        check_id(self.endpoint, "announce.endpoint")
        if self.slots < 1:
            raise InvalidArgument("announce.slots", f"must be >= 1, got {self.slots}")
        check_number(self.cores, "announce.cores")
        if sum(lane.slots for lane in self.lanes) > self.slots:
            raise InvalidArgument("announce.lanes", "lane slots exceed the cluster's slots")
        for index, pool_id in enumerate(self.pool_ids):
            check_id(pool_id, f"announce.pool_ids[{index}]")


@dataclass(frozen=True, slots=True)
class LaneLoad:
    lane: Lane
    in_flight: int = 0
    queued: int = 0


@dataclass(frozen=True, slots=True)
class VersionCounters:
    """Cumulative counters of one agent version since the agent's boot (``in_flight``: gauge)."""

    version: str
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    slow: int = 0
    in_flight: int = 0

    def __post_init__(self) -> None:
        check_id(self.version, "versions.agent_version")
        for name in ("started", "succeeded", "failed", "slow"):
            if getattr(self, name) > MAX_COUNTER:
                raise InvalidArgument(f"versions[{self.version}].{name}", "counter too large")

    def cumulative(self) -> tuple[int, int, int, int]:
        return (self.started, self.succeeded, self.failed, self.slow)


@dataclass(frozen=True, slots=True)
class VersionDelta:
    """What happened to one version since the previous accepted report: breaker input."""

    version: str
    started: int
    succeeded: int
    failed: int
    slow: int


@dataclass(frozen=True, slots=True)
class ClusterLoad:
    """Load at one report, in ORCA vocabulary. ``reported_at``: server time it was stored."""

    cpu: float = 0.0
    mem: float = 0.0
    app_utilization: float = 0.0
    rps: float = 0.0
    eps: float = 0.0
    in_flight: int = 0
    queue_depth: int = 0
    lanes: tuple[LaneLoad, ...] = ()
    versions: tuple[VersionCounters, ...] = ()
    named_metrics: Mapping[str, float] = field(default_factory=dict)
    reported_at: float = 0.0

    def __post_init__(self) -> None:
        _check_fraction(self.cpu, "load.cpu_utilization")
        _check_fraction(self.mem, "load.mem_utilization")
        _check_fraction(self.app_utilization, "load.application_utilization", upper=None)
        check_number(self.rps, "load.rps_fractional")
        check_number(self.eps, "load.eps")
        _check_named_metrics(self.named_metrics)
        if len({v.version for v in self.versions}) != len(self.versions):
            raise InvalidArgument("versions", "an agent version is listed twice")

    def stamped(self, reported_at: float) -> ClusterLoad:
        """This load as stored at ``reported_at`` (server time).

        Not ``dataclasses.replace``: that re-runs every check on each heartbeat, and these
        values were checked when the report was built.
        """
        clone = copy.copy(self)
        object.__setattr__(clone, "reported_at", reported_at)
        return clone


def _check_named_metrics(metrics: Mapping[str, float]) -> None:
    if len(metrics) > MAX_NAMED_METRICS:
        raise InvalidArgument("load.named_metrics", f"more than {MAX_NAMED_METRICS} entries")
    for key, value in metrics.items():
        if not key or len(key.encode()) > MAX_METRIC_KEY_BYTES:
            raise InvalidArgument("load.named_metrics", f"key must be 1..64 bytes: {key[:80]!r}")
        if not math.isfinite(value):
            raise InvalidArgument(f"load.named_metrics[{key}]", "must be finite")


@dataclass(frozen=True, slots=True)
class ClusterReport:
    """One heartbeat, as the registry stores it. None: not in this report (unchanged)."""

    cluster_id: str
    boot_id: str
    info: ClusterInfo | None = None
    load: ClusterLoad | None = None
    admin_state: AdminState | None = None
    weight_percent: int | None = None

    def __post_init__(self) -> None:
        check_id(self.cluster_id, "cluster_id")
        check_id(self.boot_id, "boot_id")
        if self.info is not None and self.info.id != self.cluster_id:
            raise InvalidArgument("announce", "announces another cluster id")
        if self.weight_percent is not None and not 0 <= self.weight_percent <= 256:
            raise InvalidArgument("weight_percent", "must be in 0..256")


@dataclass(frozen=True, slots=True)
class ReportOutcome:
    """What recording a report changed: deltas for breakers, reboots for stickiness."""

    cluster_id: str
    reported_at: float
    boot_changed: bool
    deltas: tuple[VersionDelta, ...]
    #: Operator drain flag as stored now; the stream forwards a change to its agent.
    drained: bool
    drain_reason: str = ""


@dataclass(frozen=True, slots=True)
class ClusterState:
    """Everything routing needs to know about one cluster, as of one read."""

    info: ClusterInfo
    load: ClusterLoad | None
    boot_id: str
    previous_boot_id: str
    boot_changes: int
    #: What the agent declares; ``drained`` (operator) overrides it, see ``admin_state``.
    agent_admin_state: AdminState
    drained: bool
    drain_reason: str
    weight_percent: int | None
    last_seen: float
    #: Heard from within ``interval * stale_after_intervals`` (server clock).
    live: bool

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def admin_state(self) -> AdminState:
        if self.drained and self.agent_admin_state is AdminState.READY:
            return AdminState.DRAIN
        return self.agent_admin_state

    @property
    def routable(self) -> bool:
        """Takes new work (staleness is routing's call: stale means fully loaded, not out)."""
        return self.admin_state is AdminState.READY


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Usage of one task from a cluster's outbox; redelivery is idempotent on ``report_id``."""

    report_id: str
    reservation_id: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    final: bool = False
    outcome: str = ""
    duration_s: float = 0.0
    agent_version: str = ""

    def __post_init__(self) -> None:
        check_id(self.report_id, "usage.report_id")
        check_id(self.reservation_id, f"usage[{self.report_id}].reservation_id")
        for name in ("requests", "input_tokens", "output_tokens"):
            if getattr(self, name) < 0:
                raise InvalidArgument(f"usage[{self.report_id}].{name}", "must be >= 0")
        if self.final and not self.outcome:
            raise InvalidArgument(f"usage[{self.report_id}].outcome", "required when final")
