"""Capacity weights: declared slots, refined by observed throughput, ramped after a return.

The registry (or whoever builds ``Candidate``s) computes ``capacity_weight`` and
``slow_start_factor`` with these pure helpers; the engine only multiplies them in.

- ``ThroughputEwma``: completions per second per cluster, an exponentially weighted moving
  average with a half-life (heartbeat deltas arrive at irregular intervals, so the decay
  follows elapsed time, not sample count).
- ``refined_weight``: slots x (this cluster's completions per busy slot / the fleet's), clamped
  so one noisy interval cannot starve or flood a cluster. A cluster whose slots are slower
  (older hardware, a throttled provider) finishes less per slot and gets less.
- ``slow_start_factor``: a returning cluster (new boot, back from drain or ejection) ramps
  linearly from ``min_factor`` to 1 over ``window`` seconds, like Envoy's slow_start; with
  ``aggression`` ≠ 1 the ramp is ``t ** (1 / aggression)`` as in Envoy.

Usage::

    ewma = ThroughputEwma(half_life=60.0)
    ewma.observe(completed=12, busy_slots=30.0, at=now)
    weight = refined_weight(slots=64, per_slot=ewma.per_slot, fleet_per_slot=fleet_mean)
    factor = slow_start_factor(now, returned_at=boot_seen_at, window=60.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class ThroughputEwma:
    """Completions/s and completions/s per busy slot, time-decayed."""

    half_life: float = 60.0
    rate: float = 0.0
    per_slot: float = 0.0
    last_at: float | None = None

    def observe(self, completed: int, busy_slots: float, at: float) -> None:
        """``completed`` tasks finished since the previous observation, ``busy_slots`` the
        average slots in use meanwhile."""
        if self.last_at is None:
            self.last_at = at
            return
        elapsed = at - self.last_at
        if elapsed <= 0:
            return
        self.last_at = at
        keep = math.exp(-math.log(2) * elapsed / self.half_life)
        rate = completed / elapsed
        self.rate = keep * self.rate + (1 - keep) * rate
        if busy_slots > 0:
            self.per_slot = keep * self.per_slot + (1 - keep) * rate / busy_slots


def refined_weight(
    slots: int, per_slot: float, fleet_per_slot: float, floor: float = 0.5, ceiling: float = 1.5
) -> float:
    """Declared slots scaled by relative throughput per slot, within [floor, ceiling]."""
    if per_slot <= 0 or fleet_per_slot <= 0:
        return float(slots)
    return slots * min(ceiling, max(floor, per_slot / fleet_per_slot))


def slow_start_factor(
    now: float,
    returned_at: float | None,
    window: float,
    min_factor: float = 0.1,
    aggression: float = 1.0,
) -> float:
    """Weight multiplier in [min_factor, 1] for a cluster that came back at ``returned_at``."""
    if returned_at is None or window <= 0 or now >= returned_at + window:
        return 1.0
    progress = max(0.0, (now - returned_at) / window)
    ramp = progress ** (1.0 / aggression) if aggression > 0 else progress
    return max(min_factor, min(1.0, ramp))
