"""The ``ClusterRegistry`` interface, its settings, and the report rules every backend shares.

Rules a report must pass (each failure is an ``InvalidArgument`` naming the field; the
stream answers it with a rejected Ack and stays open):

- intrinsic values (NaN / negative utilisation, oversized ``named_metrics``): checked when the
  model objects are built (``fleet.model``);
- pools it announces must be configured, when the registry knows the configured set;
- the first report of a cluster the registry does not know must announce it;
- cumulative counters never go backwards while the boot id stays the same;
- reports may not come faster than ``min_report_gap`` (default interval / 2): a flood. An
  announce is exempt, because an agent announces again at once after every reconnect, and so
  is a change of admin state (an agent's DRAIN on SIGTERM must get through at once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from dispatcher.errors import InvalidArgument
from dispatcher.fleet.model import (
    ClusterReport,
    ClusterState,
    ReportOutcome,
    VersionCounters,
    VersionDelta,
)

COUNTER_FIELDS = ("started", "succeeded", "failed", "slow")
#: The cumulative counters of one cluster: version -> (started, succeeded, failed, slow).
Counters = Mapping[str, tuple[int, int, int, int]]


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    """How fresh a heartbeat must be, and which pools exist (None: any pool is accepted)."""

    interval: float = 5.0
    stale_after_intervals: int = 3
    known_pools: frozenset[str] | None = None
    #: None: interval / 2. 0 turns the flood check off.
    min_report_gap: float | None = None

    @property
    def stale_after(self) -> float:
        return self.interval * self.stale_after_intervals

    @property
    def report_gap(self) -> float:
        return self.interval / 2 if self.min_report_gap is None else self.min_report_gap


class ClusterRegistry(Protocol):
    """Live facts about every cluster, shared by all dispatcher replicas."""

    settings: RegistrySettings

    async def record(self, report: ClusterReport) -> ReportOutcome:
        """Check and store one heartbeat atomically, by the store's clock; refresh liveness."""
        ...

    async def get(self, cluster_id: str) -> ClusterState:
        """One cluster (``NotFound`` if it never announced)."""
        ...

    async def list(self) -> list[ClusterState]:
        """Every cluster that ever announced, in one round trip: routing reads this often."""
        ...

    async def set_drain(self, cluster_id: str, drain: bool, reason: str = "") -> ClusterState:
        """Operator drain / undrain; survives agent restarts and overrides a READY agent."""
        ...

    async def forget(self, cluster_id: str) -> bool:
        """Remove a decommissioned cluster; True if it was known."""
        ...

    async def aclose(self) -> None:
        """Release what the registry owns (never a client it was given)."""
        ...


def check_report(report: ClusterReport, settings: RegistrySettings, known: bool) -> None:
    """The stateless rules that need the registry's settings (see the module docstring)."""
    if not known and report.info is None:
        raise InvalidArgument("announce", "required on the first report of a cluster")
    if report.info is not None and settings.known_pools is not None:
        for index, pool_id in enumerate(report.info.pool_ids):
            if pool_id not in settings.known_pools:
                raise InvalidArgument(f"announce.pool_ids[{index}]", f"unknown pool {pool_id!r}")


def counters_of(versions: Iterable[VersionCounters]) -> dict[str, tuple[int, int, int, int]]:
    return {v.version: v.cumulative() for v in versions}


def check_progress(previous: Counters, current: Counters) -> None:
    """Refuse a counter that went backwards (same boot id; the caller knows)."""
    for version, values in current.items():
        before = previous.get(version)
        if before is None:
            continue
        for name, old, new in zip(COUNTER_FIELDS, before, values, strict=True):
            if new < old:
                raise backwards(version, name)


def backwards(version: str, name: str) -> InvalidArgument:
    return InvalidArgument(f"versions[{version}].{name}", "went backwards without a new boot_id")


def deltas(previous: Counters, current: Counters) -> tuple[VersionDelta, ...]:
    """Per-version change since ``previous`` (empty after a reboot); zero deltas left out."""
    out = []
    for version, values in current.items():
        before = previous.get(version, (0, 0, 0, 0))
        diff = [new - old for old, new in zip(before, values, strict=True)]
        if any(diff):
            out.append(VersionDelta(version, *diff))
    return tuple(out)


def merge_counters(previous: Counters, current: Counters) -> dict[str, tuple[int, int, int, int]]:
    """Versions missing from a report keep their counters, so they cannot go backwards."""
    merged = dict(previous)
    merged.update(current)
    return merged
