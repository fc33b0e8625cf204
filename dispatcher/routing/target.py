"""``Target``: a candidate plus what this replica knows live about it; what policies order.

Built once per candidate update (not per decision): lane caps and the effective weight are
precomputed here so a P2C decision only reads attributes.
"""

from __future__ import annotations

from dispatcher.routing.lanes import LaneRule, lane_caps
from dispatcher.routing.load import LoadEstimate
from dispatcher.routing.model import Candidate


def effective_weight(candidate: Candidate) -> float:
    """Capacity weight x agent-check override x slow-start ramp (0 = takes no new work)."""
    base = candidate.capacity_weight if candidate.capacity_weight > 0 else float(candidate.slots)
    factor = min(1.0, max(0.0, candidate.slow_start_factor))
    return base * (candidate.weight_percent / 100.0) * factor


class Freshness:
    """Shared by all targets of one engine: heartbeats older than ``stale_before`` are stale.

    The engine moves ``stale_before`` once per decision (``-inf`` when every cluster is stale:
    fail open), so staleness costs nothing per cluster.
    """

    __slots__ = ("stale_before",)

    def __init__(self) -> None:
        self.stale_before = float("-inf")


class Target:
    """One routable cluster as this replica sees it."""

    __slots__ = ("candidate", "caps", "cluster_id", "fresh", "load", "slots", "weight")

    def __init__(
        self,
        candidate: Candidate,
        load: LoadEstimate,
        rule: LaneRule | None = None,
        fresh: Freshness | None = None,
    ) -> None:
        self.candidate = candidate
        self.cluster_id = candidate.cluster_id
        self.load = load
        self.slots = max(1, candidate.slots)
        self.weight = effective_weight(candidate)
        self.caps = lane_caps(candidate, rule or LaneRule())
        self.fresh = fresh or Freshness()

    def is_stale(self) -> bool:
        return self.load.heartbeat_at < self.fresh.stale_before

    def in_flight(self) -> float:
        """Estimated in-flight; a stale cluster counts as at least fully loaded (DESIGN §6.2)."""
        est = self.load.in_flight
        return max(est, self.slots) if self.load.heartbeat_at < self.fresh.stale_before else est

    def lane_in_flight(self, lane: str) -> float:
        est = self.load.lanes.get(lane, 0)
        if self.load.heartbeat_at < self.fresh.stale_before:
            return max(est, self.caps[lane])
        return est

    def __repr__(self) -> str:
        return f"Target({self.cluster_id!r}, weight={self.weight:g}, load={self.load!r})"


class Eligible:
    """The targets that passed the static filters for one (backend, version), with the
    cumulative weights weighted sampling bisects. Rebuilt only when a candidate's static facts
    change, so a decision never walks every cluster."""

    __slots__ = ("cum_weights", "targets", "total_weight")

    def __init__(self, targets: list[Target]) -> None:
        self.targets = targets
        cum: list[float] = []
        total = 0.0
        for target in targets:
            total += target.weight
            cum.append(total)
        self.cum_weights = cum
        self.total_weight = total

    def __len__(self) -> int:
        return len(self.targets)
