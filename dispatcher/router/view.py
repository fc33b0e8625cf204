"""This replica's view of the fleet: registry snapshots turned into routing candidates.

Every replica reads the shared cluster registry on a short timer (not per Route call, which
would add a hot-store round trip to every decision) and hands the engine fresh candidates.
The same read yields each agent version's outcome counts: the registry keeps each cluster's
cumulative counters, so every replica derives the same deltas and feeds its own breakers
from them, whichever replica holds the cluster's stream. A new boot id, or a cluster back
from a drain, starts a slow-start ramp.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dispatcher.fleet.model import AdminState, ClusterState
from dispatcher.routing.capacity import slow_start_factor
from dispatcher.routing.model import Candidate

SLOW_START_WINDOW_S = 30.0


@dataclass(frozen=True, slots=True)
class VersionCounts:
    """Outcomes of one agent version since the previous read, summed over clusters."""

    version: str
    succeeded: int = 0
    failed: int = 0
    slow: int = 0


class FleetView:
    """Remembers what the last read saw, to derive deltas and return times."""

    def __init__(self, forbidden: Iterable[str] = ()) -> None:
        self.forbidden = frozenset(forbidden)
        self._counters: dict[tuple[str, str, str], tuple[int, int, int]] = {}
        self._boot: dict[str, str] = {}
        self._ready: dict[str, bool] = {}
        self._returned_at: dict[str, float] = {}
        self._counted: set[str] = set()
        # Cluster id -> (the state it was built from, the candidate), for states the registry
        # hands out again unchanged (the memory registry does): no rebuild per refresh.
        self._built: dict[str, tuple[ClusterState, Candidate]] = {}

    def candidates(self, states: Iterable[ClusterState], now: float) -> list[Candidate]:
        candidates = [self._candidate(state, now) for state in states]
        if len(self._built) > len(candidates):  # clusters the registry forgot
            present = {c.cluster_id for c in candidates}
            self._built = {cid: b for cid, b in self._built.items() if cid in present}
        return candidates

    def _candidate(self, state: ClusterState, now: float) -> Candidate:
        self._note_return(state, now)
        factor = slow_start_factor(now, self._returned_at.get(state.id), SLOW_START_WINDOW_S)
        built = self._built.get(state.id)
        if built is not None and built[0] is state and built[1].slow_start_factor == factor:
            return built[1]
        candidate = self._build(state, factor)
        self._built[state.id] = (state, candidate)
        return candidate

    def _build(self, state: ClusterState, slow_start: float) -> Candidate:
        info, load = state.info, state.load
        return Candidate(
            cluster_id=info.id,
            region=info.region,
            endpoint=info.endpoint,
            slots=info.slots,
            lanes={lane.lane.value: lane.slots for lane in info.lanes},
            in_flight=load.in_flight if load else 0,
            lane_in_flight={ll.lane.value: ll.in_flight for ll in load.lanes} if load else {},
            heartbeat_at=state.last_seen,
            cpu=load.cpu if load else 0.0,
            mem=load.mem if load else 0.0,
            admin_state=state.admin_state.value,
            weight_percent=state.weight_percent or 100,
            forbidden=info.id in self.forbidden,
            versions=frozenset(info.versions),
            backends=frozenset(info.backends),
            pool_ids=info.pool_ids,
            boot_id=state.boot_id,
            slow_start_factor=slow_start,
        )

    def _note_return(self, state: ClusterState, now: float) -> None:
        cid, ready = state.id, state.admin_state is AdminState.READY
        rebooted = cid in self._boot and self._boot[cid] != state.boot_id
        undrained = ready and self._ready.get(cid) is False
        if rebooted or undrained:
            self._returned_at[cid] = now
        self._boot[cid], self._ready[cid] = state.boot_id, ready

    def version_counts(self, states: Iterable[ClusterState]) -> list[VersionCounts]:
        """Per-version outcome deltas since the previous call.

        The first read of a cluster only sets the baseline (a replica that starts must not
        replay a cluster's whole history into its breakers); after that a new boot or a new
        version counts from zero.
        """
        totals: dict[str, list[int]] = {}
        for state in states:
            first_sight = state.id not in self._counted
            self._counted.add(state.id)
            for counters in state.load.versions if state.load else ():
                key = (state.id, state.boot_id, counters.version)
                now_seen = (counters.succeeded, counters.failed, counters.slow)
                before = now_seen if first_sight else self._counters.get(key, (0, 0, 0))
                self._counters[key] = now_seen
                sums = totals.setdefault(counters.version, [0, 0, 0])
                for i, (new, old) in enumerate(zip(now_seen, before, strict=True)):
                    sums[i] += max(0, new - old)
        return [VersionCounts(v, *sums) for v, sums in totals.items() if any(sums)]


def serving_pools(
    cluster_pools: Iterable[str], backend: str, backend_pools: Mapping[str, tuple[str, ...]]
) -> tuple[str, ...]:
    """Pools a task on this cluster for this backend draws on: the cluster's, narrowed to the
    backend's when the config names them."""
    wanted = backend_pools.get(backend)
    pools = tuple(cluster_pools)
    return tuple(p for p in pools if p in wanted) if wanted else pools
