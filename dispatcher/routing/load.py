"""Local in-flight accounting: what this replica knows beyond the last heartbeat (DESIGN §6.3).

``estimated_in_flight = last heartbeat in_flight + this replica's dispatches - its completions
since that heartbeat``. Other replicas' dispatches are invisible until the next heartbeat; the
estimate still differs per replica, which (with P2C's randomness) is what keeps replicas from
herding onto the cluster that looked emptiest in the shared heartbeat.

Usage::

    load = LocalLoad()
    load.on_heartbeat("eu-1", in_flight=40, at=now, lanes={"heavy": 12})
    load.on_dispatch("eu-1", "heavy")
    load.estimate("eu-1").in_flight        # 41
"""

from __future__ import annotations

from collections.abc import Mapping

from dispatcher.routing.model import LANES


class LoadEstimate:
    """One cluster's estimated in-flight, total and per lane; mutated in place (hot path)."""

    __slots__ = ("heartbeat_at", "in_flight", "lanes")

    def __init__(self) -> None:
        self.in_flight = 0
        self.lanes: dict[str, int] = dict.fromkeys(LANES, 0)
        self.heartbeat_at = float("-inf")

    def lane(self, lane: str) -> int:
        return self.lanes.get(lane, 0)

    def __repr__(self) -> str:
        return f"LoadEstimate(in_flight={self.in_flight}, lanes={self.lanes})"


class LocalLoad:
    """Per-replica estimates for every cluster, reset by each (newer) heartbeat."""

    __slots__ = ("_clusters",)

    def __init__(self) -> None:
        self._clusters: dict[str, LoadEstimate] = {}

    def estimate(self, cluster_id: str) -> LoadEstimate:
        """The live estimate object of a cluster (created empty on first use)."""
        found = self._clusters.get(cluster_id)
        if found is None:
            found = self._clusters[cluster_id] = LoadEstimate()
        return found

    def on_heartbeat(
        self,
        cluster_id: str,
        in_flight: int,
        at: float,
        lanes: Mapping[str, int] | None = None,
    ) -> bool:
        """Adopt a heartbeat's counts; False (ignored) when it is not newer than the last one.

        Our dispatches and completions before ``at`` are already in the reported numbers, so
        the local deltas restart from zero.
        """
        est = self.estimate(cluster_id)
        if at <= est.heartbeat_at:
            return False
        est.heartbeat_at = at
        est.in_flight = max(0, in_flight)
        reported = lanes or {}
        for lane in est.lanes:
            est.lanes[lane] = max(0, reported.get(lane, 0))
        return True

    def on_dispatch(self, cluster_id: str, lane: str) -> None:
        est = self.estimate(cluster_id)
        est.in_flight += 1
        est.lanes[lane] = est.lanes.get(lane, 0) + 1

    def on_complete(self, cluster_id: str, lane: str) -> None:
        # Floors at zero: a completion of a task the heartbeat never counted (dispatched just
        # before it, finished before we saw it) must not drive the estimate negative.
        est = self.estimate(cluster_id)
        if est.in_flight > 0:
            est.in_flight -= 1
        if est.lanes.get(lane, 0) > 0:
            est.lanes[lane] -= 1

    def forget(self, cluster_id: str) -> None:
        self._clusters.pop(cluster_id, None)
