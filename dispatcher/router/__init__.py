"""The Route path: engine decision -> quota reservation with spillover -> session pin.

``Router`` joins the pure routing engine (``dispatcher.routing``) with the hot-store pieces:
the ledger reserves the estimated cost down the engine's preference list in one atomic step,
the session table pins sticky conversations, and the fleet view keeps the engine's
candidates fresh. It knows nothing of protobuf; ``rpc/`` translates.

Idempotency: the reservation is keyed by the request id and its candidate id encodes the
whole choice (cluster, backend, version, lane), so a retried Route is answered from the
ledger's first reservation and never reserves twice.

Results: a routed task's id is its reservation id and its result token derives from that id
under a secret every replica shares (``relay.tokens``), so a retry returns the same token,
only the caller holding it can read the result, and Route writes nothing for it: the
stream opens on first use (``relay.routed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from dispatcher import config as cfg
from dispatcher.errors import InvalidArgument, QuotaExhausted
from dispatcher.estimates import EstimateBook
from dispatcher.fleet.registry import ClusterRegistry
from dispatcher.fleet.sessions import SessionStore
from dispatcher.ledger import (
    Candidate,
    Denial,
    Ledger,
    Reservation,
    ReserveRequest,
    TokenEstimate,
    Usage,
)
from dispatcher.ledger.events import EventKind
from dispatcher.logs import get_logger
from dispatcher.metrics import Metrics
from dispatcher.relay.tokens import TaskTokens
from dispatcher.router.settings import with_operator_settings
from dispatcher.router.view import FleetView, serving_pools
from dispatcher.routing.breaker import BreakerState
from dispatcher.routing.engine import Engine, EngineSettings
from dispatcher.routing.model import Choice, Decision, Outcome, Request
from dispatcher.routing.sticky import Pin
from dispatcher.watch import WatchEvent, WatchHub, WatchKind

log = get_logger(__name__)

CHOICE_SEP = "|"
RESERVABLE_MEMO_SIZE = 4096
BREAKER_GAUGE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


def encode_choice(choice: Choice) -> str:
    return CHOICE_SEP.join((choice.cluster_id, choice.backend, choice.version, choice.lane))


def decode_choice(candidate_id: str) -> Choice:
    cluster_id, backend, version, lane = candidate_id.split(CHOICE_SEP)
    return Choice(cluster_id, backend, version, lane)


class RouteCall(NamedTuple):
    """A validated Route request in domain terms (a named tuple, as ``routing.model``'s
    per-Route records are: immutable, and quicker to build than a frozen dataclass)."""

    request_id: str
    route: str
    agent: str
    version: str | None = None
    task_class: str | None = None
    expected_duration: float | None = None
    estimate: TokenEstimate | None = None
    session_key: str = ""
    lease_s: float = 60.0

    def engine_request(self, estimate: TokenEstimate) -> Request:
        return Request(
            self.route,
            agent=self.agent,
            version=self.version,
            task_class=self.task_class,
            expected_duration=self.expected_duration,
            session_key=self.session_key or None,
            estimate_tokens=int(estimate.input_tokens + estimate.max_output_tokens),
        )


class Routed(NamedTuple):
    """The answer: where the task runs and the quota held for it (none on MAINTENANCE)."""

    outcome: Outcome
    choice: Choice | None = None
    region: str = ""
    endpoint: str = ""
    reservation: Reservation | None = None
    reason: str = ""
    message: str = ""
    handover_from: str | None = None
    result_token: str = ""


class Router:
    def __init__(
        self,
        config: cfg.DispatcherConfig,
        ledger: Ledger,
        registry: ClusterRegistry,
        sessions: SessionStore,
        metrics: Metrics,
        engine: Engine | None = None,
        *,
        tokens: TaskTokens | None = None,
        watch: WatchHub | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.registry = registry
        self.sessions = sessions
        self.metrics = metrics
        self.tokens = tokens
        self.watch = watch or WatchHub()
        self.engine = engine or Engine(config, EngineSettings.from_config(config.routing))
        self.view = FleetView(c.id for c in config.clusters if c.forbidden)
        self.estimates = EstimateBook(self._default_estimate)
        self._backend_pools = {name: spec.pools for name, spec in config.backends.items()}
        self._pool_family = {p.id: p.quota_family for p in config.pools}
        self._reservable_memo: dict[
            tuple[tuple[str, ...], str], tuple[tuple[str, ...], str | None]
        ] = {}

    def _default_estimate(self, agent: str) -> TokenEstimate:
        default = self.config.agent_spec(agent).default_estimate
        return TokenEstimate(default.input_tokens, default.max_output_tokens)

    # -- the fleet --------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the registry once: new candidates for the engine, outcome counts for breakers."""
        states = await self.registry.list()
        now = time.time()
        self.engine.replace(self.view.candidates(states, now))
        for counts in self.view.version_counts(states):
            transition = self.engine.on_version_counts(
                counts.version, counts.succeeded, counts.failed, counts.slow, now
            )
            if transition is not None:
                log.warning("breaker", version=counts.version, to=transition.after.value)
        await self._journal_transitions()

    async def refresh_forever(self, stop: asyncio.Event, interval_s: float) -> None:
        while not stop.is_set():
            try:
                await self.refresh()
            except Exception:  # a bad read must not end the loop that keeps routing fresh
                log.exception("fleet refresh failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    async def _journal_transitions(self) -> None:
        for t in self.engine.take_transitions():
            self.metrics.breaker_state.labels(t.key).set(BREAKER_GAUGE[t.after])
            data = {
                "agent_version": t.key,
                "from": t.before.value,
                "to": t.after.value,
                "failure_rate": t.failure_rate,
                "slow_rate": t.slow_rate,
                "open_until": t.open_until,
            }
            await self.ledger.record(EventKind.BREAKER, None, (), data)
            self.watch.publish(
                WatchEvent(
                    WatchKind.BREAKER,
                    f"{t.key}: {t.before.value} -> {t.after.value} "
                    f"(failure rate {t.failure_rate:.1%})",
                    agent_version=t.key,
                    attributes={"from": t.before.value, "to": t.after.value},
                )
            )

    def apply_settings(
        self,
        weights: Mapping[str, Mapping[str, float]],
        breakers: Mapping[str, Mapping[str, Any]],
    ) -> bool:
        """Operator weights and breaker thresholds over the config file; True if changed."""
        effective = with_operator_settings(self.config, weights, breakers)
        if effective == self.engine.config:
            return False
        self.engine.reconfigure(effective)
        return True

    # -- routing ----------------------------------------------------------------------------

    async def decide(self, call: RouteCall, *, explain: bool = False) -> Decision:
        """The engine's decision for ``call`` with its session pin applied; reserves nothing."""
        estimate = call.estimate or self.estimates.estimate(call.agent)
        pin = await self._pin(call.session_key)
        return self.engine.decide(
            call.engine_request(estimate), time.time(), pin=pin, explain=explain
        )

    async def route(self, call: RouteCall) -> Routed:
        estimate = call.estimate or self.estimates.estimate(call.agent)
        # No await without a session: most Routes have none, and each await costs.
        pin = await self._pin(call.session_key) if call.session_key else None
        decision = self.engine.decide(call.engine_request(estimate), time.time(), pin=pin)
        if decision.outcome is Outcome.MAINTENANCE:
            self.metrics.count_decision("MAINTENANCE", "", "")
            return Routed(Outcome.MAINTENANCE, reason=decision.reason, message=decision.message)
        candidates = self._ledger_candidates(decision.choices, estimate)
        if not candidates:
            self.metrics.denials.labels(call.route).inc()
            raise QuotaExhausted(self._retry_after(), {"fleet": "no eligible cluster"})
        started = time.perf_counter()
        result = await self.ledger.reserve(
            ReserveRequest(call.request_id, tuple(candidates), call.lease_s)
        )
        self.metrics.reserve_seconds.observe(time.perf_counter() - started)
        if isinstance(result, Denial):
            self.metrics.denials.labels(call.route).inc()
            raise result.to_error()
        return await self._routed(call, decision, result, pin)

    async def _routed(
        self, call: RouteCall, decision: Decision, reservation: Reservation, pin: Pin | None
    ) -> Routed:
        choice = decode_choice(reservation.candidate_id)
        target = self.engine.targets.get(choice.cluster_id)
        handover = decision.handover_from if pin and pin.cluster_id != choice.cluster_id else None
        # The result stream opens on first use (``relay.routed``): nothing to write here.
        token = self.tokens.of(reservation.reservation_id) if self.tokens else ""
        if not reservation.replayed:
            self.engine.on_dispatch(choice.cluster_id, choice.lane)
            if call.session_key:
                await self._pin_session(
                    call, choice, handover, target.candidate.boot_id if target else ""
                )
            outcome = "FALLBACK" if decision.outcome is Outcome.FALLBACK else "ROUTED"
            self.metrics.count_decision(outcome, choice.cluster_id, choice.backend)
            if reservation.spilled_from:
                self.metrics.spillovers.labels(reservation.spilled_from.split(CHOICE_SEP)[0]).inc()
            if self.watch.watching:
                self._publish_routed(outcome, choice, reservation, handover)
        return Routed(
            decision.outcome if decision.outcome is Outcome.FALLBACK else Outcome.ROUTED,
            choice,
            region=target.candidate.region if target else "",
            endpoint=target.candidate.endpoint if target else "",
            reservation=reservation,
            reason=decision.reason or self.config.routing.policy,
            handover_from=handover,
            result_token=token,
        )

    def _publish_routed(
        self, outcome: str, choice: Choice, reservation: Reservation, handover: str | None
    ) -> None:
        at = {"backend": choice.backend, "lane": choice.lane, "outcome": outcome}
        at["reservation_id"] = reservation.reservation_id
        pools, to = ",".join(reservation.pool_ids), choice.cluster_id

        def publish(kind: WatchKind, summary: str, **extra: str) -> None:
            attributes = {**extra, **at}
            self.watch.publish(
                WatchEvent(kind, summary, to, pools, choice.version, attributes=attributes)
            )

        publish(WatchKind.DECISION, f"{outcome.lower()} to {to} ({choice.backend}, {choice.lane})")
        if reservation.spilled_from:
            first = reservation.spilled_from.split(CHOICE_SEP)[0]
            publish(WatchKind.SPILLOVER, f"{first} full: spilled to {to}", from_cluster=first)
        if handover:
            summary = f"session moved from {handover} to {to}"
            publish(WatchKind.HANDOVER, summary, from_cluster=handover)

    def _ledger_candidates(
        self, choices: Sequence[Choice], estimate: TokenEstimate
    ) -> list[Candidate]:
        """Choices the ledger can reserve for: with pools, in the first choice's quota family
        (one reservation's candidates must share a family; see DESIGN §7.5)."""
        family: str | None = None
        candidates = []
        for choice in choices:
            target = self.engine.targets.get(choice.cluster_id)
            cluster_pools = target.candidate.pool_ids if target else ()
            pools, pools_family = self._reservable(tuple(cluster_pools), choice.backend)
            if pools_family is None or (family and family != pools_family):
                continue
            family = pools_family
            candidates.append(Candidate(encode_choice(choice), pools, estimate))
        return candidates

    def _reservable(
        self, cluster_pools: tuple[str, ...], backend: str
    ) -> tuple[tuple[str, ...], str | None]:
        """The configured pools a backend's tasks on such a cluster draw on, and their one
        family (None: no pools, or several families). Memoised: it depends on the config and
        the cluster's announced pools only, and every Route asks it for each candidate."""
        key = (cluster_pools, backend)
        known = self._reservable_memo.get(key)
        if known is not None:
            return known
        pools = serving_pools(cluster_pools, backend, self._backend_pools)
        pools = tuple(p for p in pools if p in self._pool_family)
        families = {self._pool_family[p] for p in pools}
        answer = (pools, families.pop() if pools and len(families) == 1 else None)
        if len(self._reservable_memo) >= RESERVABLE_MEMO_SIZE:
            self._reservable_memo.clear()  # announced pool sets changed a lot: start over
        self._reservable_memo[key] = answer
        return answer

    def _retry_after(self) -> float:
        return self.config.routing.heartbeat_interval

    async def _pin(self, session_key: str) -> Pin | None:
        if not session_key:
            return None
        record = await self.sessions.get(session_key)
        return Pin(record.cluster_id, record.boot_id, record.backend) if record else None

    async def _pin_session(
        self, call: RouteCall, choice: Choice, handover: str | None, boot_id: str
    ) -> None:
        if not call.session_key:
            return
        await self.sessions.pin(
            call.session_key, choice.cluster_id, boot_id, choice.backend, handover=bool(handover)
        )
        if handover:
            await self.ledger.record(
                EventKind.HANDOVER,
                None,
                (),
                {"session": call.session_key, "from": handover, "to": choice.cluster_id},
            )

    # -- outcomes ---------------------------------------------------------------------------

    def released(self, reservation: Reservation) -> None:
        """Given back before it ran: undo this replica's count of it in flight, which would
        otherwise inflate the cluster's load until its next heartbeat."""
        choice = _choice_of(reservation)
        if choice is not None:
            self.engine.load.on_complete(choice.cluster_id, choice.lane)

    def settled(
        self, reservation: Reservation, usage: Usage, outcome: str, duration: float
    ) -> None:
        """Local accounting, outlier input and estimate learning for a first settle.

        Breakers are fed from heartbeat counters (every replica sees those); feeding them
        settles too would count each outcome twice.
        """
        choice = _choice_of(reservation)
        if choice is None:
            return
        ok = None if outcome in ("cancelled", "rate_limited") else outcome == "success"
        _, ejection = self.engine.on_complete(
            choice.cluster_id, choice.lane, ok=ok, duration=duration, now=time.time()
        )
        if ejection is not None:
            log.warning("cluster ejected", cluster=choice.cluster_id, until=ejection.until)
            self.watch.publish(
                WatchEvent(
                    WatchKind.EJECTION,
                    f"{choice.cluster_id} ejected after consecutive errors",
                    cluster_id=choice.cluster_id,
                    attributes={"until": f"{ejection.until:.3f}"},
                )
            )
        agent = choice.version.split("@", 1)[0]
        self.estimates.learn(agent, usage)


def _choice_of(reservation: Reservation) -> Choice | None:
    try:
        return decode_choice(reservation.candidate_id)
    except ValueError:
        return None  # reserved by someone other than this router (e.g. a test or a tool)


def split_version(agent: str, agent_version: str) -> str | None:
    """The version part of a pinned ``agent@version``; it must name the request's agent."""
    if not agent_version:
        return None
    name, sep, version = agent_version.partition("@")
    if not sep or not version or name != agent:
        raise InvalidArgument("agent_version", f"expected {agent}@<version>, got {agent_version!r}")
    return version
