"""Lanes: heavy tasks take set-aside slots; light tasks never queue behind them (DESIGN §1, §6).

A task travels with its lane: ``light``, ``standard`` or ``heavy`` (``model.lane_for``
derives it from an expected duration: < 1 s light, > 120 s heavy). A cluster may set slots
aside per lane (``Candidate.lanes``); the rest are shared. The rule:

1. **Caps.** Heavy tasks may fill the heavy lane plus ``heavy_share`` (default 0.6) of the
   shared slots. Standard tasks may use everything but the light lane; light tasks anything.
2. **Room.** A cluster has room for a task when its estimated in-flight is below its slots
   (so the task starts at once, it does not queue) and, for heavy, its heavy in-flight is
   below the heavy cap. Clusters with room always rank before clusters without.
3. **With room**, the score is ``(in-flight + 1) / weight``; for heavy the larger of that
   and ``(heavy in-flight + 1) / heavy cap`` (scaled to the weight), so heavy work spreads
   evenly and every cluster keeps non-heavy slots that free up every few seconds.
4. **Without room**, the task must queue somewhere. Heavy work queues on the largest cluster
   of those compared (its slots free fastest), so the queue forms in one place instead of a
   heavy task at the head of every cluster's FIFO. Light and standard work goes where the
   expected wait is shortest: queue ahead / non-heavy tasks in flight (the slots that churn).

Why: a five-minute task at the head of a FIFO queue makes everything behind it wait for a
slot that frees every few minutes. In the simulator (64/32/16/8 slots, 90 % load, 4 replicas,
5 s heartbeats, 5 % of tasks 400 s long, FIFO cluster queues) spreading queued heavy tasks
the way JSQ does gives an interactive p99 of ~47 s; this rule gives ~24 s, at the price of
heavy tasks waiting longer (still < 0.5 % of all tasks wait over 60 s). ``heavy_share``
between 0.6 and 0.9 all meet the targets; lower favours interactive latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dispatcher.routing.model import HEAVY, LIGHT, STANDARD, Candidate

if TYPE_CHECKING:  # target.py imports this module
    from dispatcher.routing.target import Target


@dataclass(frozen=True, slots=True)
class LaneRule:
    """``heavy_share``: fraction of a cluster's shared slots heavy tasks may fill (0..1]."""

    heavy_share: float = 0.6


def lane_caps(candidate: Candidate, rule: LaneRule) -> dict[str, float]:
    """Slots each lane may fill on this cluster."""
    slots = max(1, candidate.slots)
    reserved = {lane: max(0, candidate.lanes.get(lane, 0)) for lane in (LIGHT, STANDARD, HEAVY)}
    shared = max(0, slots - sum(reserved.values()))
    return {
        LIGHT: float(slots),
        STANDARD: float(slots - reserved[LIGHT]),
        HEAVY: reserved[HEAVY] + rule.heavy_share * shared,
    }


def has_room(target: Target, lane: str) -> bool:
    """A free slot for this lane (estimated): heavy also needs room under its cap."""
    if target.in_flight() >= target.caps[LIGHT if lane == LIGHT else STANDARD]:
        return False
    return lane != HEAVY or target.lane_in_flight(HEAVY) < target.caps[HEAVY]


def lane_score(target: Target, lane: str) -> float:
    """Load normalised by weight; heavy tasks also by how full the heavy lane is."""
    total = (target.in_flight() + 1.0) / target.weight
    if lane != HEAVY:
        return total
    cap = max(target.caps[HEAVY], 1e-9) * target.weight / target.slots
    return max(total, (target.lane_in_flight(HEAVY) + 1.0) / cap)


def overflow_score(target: Target, lane: str) -> float:
    """Where to go when the lane is full everywhere sampled (lower is better).

    Heavy: the largest cluster, where slots free fastest, so the queue forms in one place.
    Others: the shortest expected wait, queue ahead / the non-heavy tasks that free slots.
    """
    if lane == HEAVY:
        return 1.0 / target.weight
    ahead = target.in_flight() - target.slots + 1.0
    churn = target.in_flight() - target.lane_in_flight(HEAVY)
    return ahead / max(churn, 0.5)
