"""The routing engine: resolve → breaker/fallback → filter → pick (DESIGN §6.1-6.3, 6.5).

One ``Engine`` per dispatcher replica. It holds this replica's routing state: the backend
splits, breakers, outlier ejections, local in-flight estimates and the policy's rotation. It
does no I/O: the caller feeds it candidates from the cluster registry and outcomes from
settles, asks for a ``Decision``, then reserves quota down ``decision.choices`` (spillover).

Usage::

    engine = Engine(config, EngineSettings.from_config(config.routing))
    engine.replace(candidates)              # a registry snapshot; then update(c) per heartbeat
    decision = engine.decide(Request("chat-default", agent="auditor", task_class="heavy"), now)
    for choice in decision.choices:         # the ledger reserves down this list (spillover)
        ...
    engine.on_dispatch(choice.cluster_id, choice.lane)        # once the reservation holds
    engine.on_complete(cluster_id, lane, version=v, ok=True, duration=4.2, now=now)  # settle
    engine.take_transitions()               # breaker changes, for the journal

``decide(..., pin=Pin(...))`` applies stickiness for ``request.session_key``;
``decide(..., explain=True)`` also fills every candidate's filter reason and score.

Eligibility per (backend, version) is cached and rebuilt only when a candidate's static facts
change or an ejection starts or ends; a heartbeat that only moves load updates the shared
``LoadEstimate`` in place. A P2C decision therefore costs the same with 10 or 1,000 clusters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from random import Random

from dispatcher.config import AgentSpec, DispatcherConfig, RouteSpec, RoutingConfig
from dispatcher.errors import NotFound
from dispatcher.routing.breaker import BreakerBoard, Transition, choose_version, version_chain
from dispatcher.routing.filters import static_reason
from dispatcher.routing.lanes import LaneRule, has_room
from dispatcher.routing.load import LocalLoad
from dispatcher.routing.model import (
    NOTHING_EXPLAINED,
    Candidate,
    Choice,
    Decision,
    Outcome,
    Reason,
    Request,
)
from dispatcher.routing.outlier import Ejection, OutlierDetector
from dispatcher.routing.policies import Policy, policy_from_name
from dispatcher.routing.policies.p2c import score
from dispatcher.routing.split import SmoothWeighted
from dispatcher.routing.sticky import Pin, decide_sticky
from dispatcher.routing.target import Eligible, Freshness, Target


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Routing knobs. ``from_config`` takes what ``RoutingConfig`` has; the rest are defaults."""

    policy: str = "p2c"
    stale_after: float = 15.0
    panic: str = "fail_open"
    spill_depth: int = 4
    session_bound: float = 1.25
    lanes: LaneRule = field(default_factory=LaneRule)

    @classmethod
    def from_config(
        cls, routing: RoutingConfig, *, spill_depth: int = 4, lanes: LaneRule | None = None
    ) -> EngineSettings:
        # spill_depth and lanes are not in RoutingConfig yet (config/ is not ours to change).
        return cls(
            policy=routing.policy,
            stale_after=routing.stale_after,
            panic=routing.panic,
            spill_depth=spill_depth,
            lanes=lanes or LaneRule(),
        )


class Engine:
    """One replica's routing state and the decide step; see the module docstring."""

    def __init__(
        self,
        config: DispatcherConfig | None = None,
        settings: EngineSettings | None = None,
        rng: Random | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.config = config or DispatcherConfig()
        self.settings = settings or EngineSettings.from_config(self.config.routing)
        self.rng = rng or Random()
        self.policy = policy or policy_from_name(self.settings.policy)
        self.load = LocalLoad()
        self.breakers = BreakerBoard(lambda key: self.config.agent_spec(key).breaker)
        self.outliers = OutlierDetector(rng=self.rng)
        self.blocked_pools: frozenset[str] = frozenset()
        self._fresh = Freshness()
        self._targets: dict[str, Target] = {}
        self._eligible: dict[tuple[str, str], Eligible] = {}
        self._splits: dict[str, SmoothWeighted] = {}
        self._agents: dict[str, tuple[AgentSpec, tuple[str, ...]]] = {}
        self._freshest = float("-inf")
        self._ejections_change_at = float("inf")

    # -- candidates -------------------------------------------------------------------------

    def update(self, candidate: Candidate) -> None:
        """Take a candidate's latest facts; only a change in static facts drops the caches."""
        cid = candidate.cluster_id
        self.load.on_heartbeat(
            cid, candidate.in_flight, candidate.heartbeat_at, candidate.lane_in_flight
        )
        self._freshest = max(self._freshest, candidate.heartbeat_at)
        old = self._targets.get(cid)
        if old is not None and old.candidate.static_key() == candidate.static_key():
            old.candidate = candidate  # cpu/mem/boot id: read live, no cache depends on them
            return
        self._targets[cid] = Target(
            candidate, self.load.estimate(cid), self.settings.lanes, self._fresh
        )
        self._eligible.clear()

    def replace(self, candidates: Iterable[Candidate]) -> None:
        """Make ``candidates`` the whole fleet (a registry snapshot)."""
        present: set[str] = set()
        for candidate in candidates:
            self.update(candidate)
            present.add(candidate.cluster_id)
        for gone in [cid for cid in self._targets if cid not in present]:
            self.remove(gone)

    def remove(self, cluster_id: str) -> None:
        if self._targets.pop(cluster_id, None) is not None:
            self.load.forget(cluster_id)
            self._eligible.clear()

    def reconfigure(self, config: DispatcherConfig) -> None:
        """Routes and agents as an operator changed them (weights, breaker thresholds).
        A changed route's split starts over; breakers keep their state."""
        old = self.config
        self.config = config
        for name in list(self._splits):
            if old.routes.get(name) != config.routes.get(name):
                del self._splits[name]
        self._agents.clear()
        self.breakers.respec(lambda key: config.agent_spec(key).breaker)

    def set_blocked_pools(self, pools: Iterable[str]) -> None:
        """Quota pools the ledger reports blocked (429 retry-after); clusters drawing only on
        blocked pools are filtered as ``quota_blocked``."""
        blocked = frozenset(pools)
        if blocked != self.blocked_pools:
            self.blocked_pools = blocked
            self._eligible.clear()

    @property
    def targets(self) -> dict[str, Target]:
        return self._targets

    # -- outcomes ---------------------------------------------------------------------------

    def on_dispatch(self, cluster_id: str, lane: str) -> None:
        self.load.on_dispatch(cluster_id, lane)

    def on_complete(
        self,
        cluster_id: str,
        lane: str,
        *,
        version: str | None = None,
        ok: bool | None = None,
        duration: float = 0.0,
        now: float = 0.0,
    ) -> tuple[Transition | None, Ejection | None]:
        """A settle: local accounting, plus breaker and outlier input when ``ok`` is known."""
        self.load.on_complete(cluster_id, lane)
        if ok is None:
            return None, None
        transition = self.breakers.get(version).record(ok, duration, now) if version else None
        ejection = self.outliers.record(cluster_id, ok, now, self._targets.keys())
        if ejection is not None:
            self._eligible.clear()
            self._ejections_change_at = min(self._ejections_change_at, ejection.until)
        return transition, ejection

    def on_version_counts(
        self, version: str, succeeded: int, failed: int, slow: int, now: float
    ) -> Transition | None:
        """Heartbeat counter deltas of one agent version (``fleet.model.VersionDelta``).

        Feed a breaker from heartbeats or from settles, not both: every replica sees every
        heartbeat, so counting both would count each outcome twice.
        """
        return self.breakers.get(version).record_counts(succeeded, failed, slow, now)

    # -- decisions --------------------------------------------------------------------------

    def decide(
        self, request: Request, now: float, *, pin: Pin | None = None, explain: bool = False
    ) -> Decision:
        """Choose backend, version and clusters for ``request``. Raises ``NotFound`` for an
        unknown route. ``pin``: the session table's entry for ``request.session_key``."""
        self._tick(now)
        route = self.config.routes.get(request.route)
        if route is None:
            raise NotFound("route", request.route)
        spec, chain = self._agent(request.agent_version)
        picked = self._pick(request.route, route, chain, now, pin, dry_run=explain)
        if picked is None:
            return Decision(
                Outcome.MAINTENANCE,
                lane=request.lane,
                reason="breaker_open",
                message=spec.maintenance_message,
            )
        backend, version, fallback, eligible = picked
        lane = request.lane
        handover: str | None = None
        if not eligible.targets:
            order: list[Target] = []
        elif request.session_key:
            sticky = decide_sticky(
                request.session_key, pin, eligible.targets, self.settings.session_bound
            )
            order, handover = list(sticky.order[: self.settings.spill_depth]), sticky.handover_from
        else:
            order = self.policy.order(eligible, request, self.rng, self.settings.spill_depth)
        outcome = Outcome.FALLBACK if fallback else Outcome.ROUTED
        if not order:
            outcome = Outcome.NO_CANDIDATE
        return Decision(
            outcome,
            tuple([Choice(t.cluster_id, backend, version, lane) for t in order]),
            backend,
            version,
            lane,
            reason="no_candidate" if not order else ("fallback" if fallback else ""),
            handover_from=handover,
            reasons=self._reasons(backend, version, lane, now) if explain else NOTHING_EXPLAINED,
            scores=(
                {t.cluster_id: score(t, lane) for t in eligible.targets}
                if explain
                else NOTHING_EXPLAINED
            ),
        )

    def _agent(self, agent_version: str) -> tuple[AgentSpec, tuple[str, ...]]:
        # Cached: an unlisted agent's spec is a fresh pydantic model per lookup.
        found = self._agents.get(agent_version)
        if found is None:
            spec = self.config.agent_spec(agent_version)
            found = self._agents[agent_version] = (
                spec,
                version_chain(agent_version, spec.fallback),
            )
        return found

    def _pick(
        self,
        route_name: str,
        route: RouteSpec,
        chain: tuple[str, ...],
        now: float,
        pin: Pin | None,
        *,
        dry_run: bool = False,
    ) -> tuple[str, str, bool, Eligible] | None:
        """(backend, version, is_fallback, eligible), or None when every breaker is open.

        A backend with no eligible cluster for the version counts as tripped and the split
        picks again over the rest (renormalising their shares). ``dry_run`` (Explain) takes
        no half-open probe and leaves the split's sequence as it was.
        """
        split = self._splits.get(route_name)
        if split is None:
            split = SmoothWeighted((b.name, b.weight) for b in route.backends)
            self._splits[route_name] = split
        if dry_run:
            split = split.copy()
        allow = self.breakers.would_allow if dry_run else self.breakers.allow
        version, fallback = choose_version(chain, lambda v: allow(v, now))
        if version is None:
            return None
        tripped: set[str] = set()
        # A session keeps its backend (its conversation is with that model) while it is live.
        backend = pin.backend if pin and pin.backend in split.names else split.pick()
        while backend is not None:
            eligible = self._eligible_for(backend, version, now)
            if eligible.targets:
                return backend, version, fallback, eligible
            tripped.add(backend)
            backend = split.pick(tripped)
        return "", version, fallback, Eligible([])

    def _tick(self, now: float) -> None:
        stale_before = now - self.settings.stale_after
        # Every cluster stale: the heartbeats are late, not every cluster full — fail open.
        self._fresh.stale_before = stale_before if self._freshest >= stale_before else float("-inf")
        if now >= self._ejections_change_at:
            self._eligible.clear()
            self._ejections_change_at = self.outliers.next_change(now)

    def _eligible_for(self, backend: str, version: str, now: float) -> Eligible:
        key = (backend, version)
        found = self._eligible.get(key)
        if found is None:
            found = self._eligible[key] = self._build_eligible(backend, version, now)
        return found

    def _build_eligible(self, backend: str, version: str, now: float) -> Eligible:
        kept: list[Target] = []
        ejected_only: list[Target] = []
        for target in self._targets.values():
            ejected = self.outliers.is_ejected(target.cluster_id, now)
            reason = static_reason(target.candidate, backend, version, ejected, self.blocked_pools)
            if reason is None:
                kept.append(target)
            elif reason is Reason.EJECTED:
                ejected_only.append(target)
        if not kept and ejected_only and self.settings.panic == "fail_open":
            kept = ejected_only
        return Eligible(kept)

    def _reasons(self, backend: str, version: str, lane: str, now: float) -> dict[str, str]:
        """Every candidate's reason for Explain ("" = eligible with room)."""
        reasons: dict[str, str] = {}
        for cid, target in self._targets.items():
            ejected = self.outliers.is_ejected(cid, now)
            reason = static_reason(target.candidate, backend, version, ejected, self.blocked_pools)
            if reason is None and target.is_stale():
                reason = Reason.STALE
            elif reason is None and not has_room(target, lane):
                reason = Reason.LANE_FULL
            reasons[cid] = reason.value if reason else ""
        return reasons

    def take_transitions(self) -> list[Transition]:
        """Breaker transitions since the last call, for the journal."""
        return self.breakers.take_transitions()
