"""Circuit breaker per agent version, resilience4j semantics (DESIGN §6), pure.

CLOSED: outcomes fill a count-based sliding window; once it holds ``min_calls`` calls and the
failure rate (or slow-call rate) reaches its threshold, the breaker opens. OPEN: nothing is
allowed for ``open_for`` x 2^(consecutive openings - 1), capped at ``max_open_for``. Then
HALF_OPEN: ``half_open_probes`` calls are let through; when all are recorded, a rate at the
threshold re-opens (with the longer wait) and anything below closes and resets the backoff.

Time is always passed in (``now``): the breaker never reads a clock. Every state change is
returned as a ``Transition`` (and kept in ``transitions`` until ``take_transitions``) so the
caller can journal it.

Usage::

    breaker = CircuitBreaker("auditor@16.4", BreakerSpec())
    if breaker.allow(now):
        ...
    transition = breaker.record(ok=False, duration=2.0, now=now)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from dispatcher.config import BreakerSpec


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change, for the journal."""

    key: str
    before: BreakerState
    after: BreakerState
    at: float
    failure_rate: float
    slow_rate: float
    open_until: float | None = None


class CircuitBreaker:
    """One breaker; see the module docstring for the rules."""

    def __init__(self, key: str, spec: BreakerSpec | None = None) -> None:
        self.key = key
        self.spec = spec or BreakerSpec()
        self._state = BreakerState.CLOSED
        self._window: deque[tuple[bool, bool]] = deque(maxlen=self.spec.window)
        self._openings = 0  # consecutive, reset when the breaker closes
        self._open_until = 0.0
        self._probes_allowed = 0
        self.transitions: list[Transition] = []

    def respec(self, spec: BreakerSpec) -> None:
        """New thresholds (an operator's SetBreaker); state and recent calls are kept, the
        newest ``spec.window`` of them."""
        self.spec = spec
        self._window = deque(self._window, maxlen=spec.window)

    def state(self, now: float) -> BreakerState:
        self._advance(now)
        return self._state

    def allow(self, now: float) -> bool:
        """May a call go through now? In HALF_OPEN each True uses up one probe."""
        self._advance(now)
        if self._state is BreakerState.CLOSED:
            return True
        if (
            self._state is BreakerState.HALF_OPEN
            and self._probes_allowed < self.spec.half_open_probes
        ):
            self._probes_allowed += 1
            return True
        return False

    def would_allow(self, now: float) -> bool:
        """What ``allow`` would answer, without using up a half-open probe (Explain)."""
        self._advance(now)
        if self._state is BreakerState.HALF_OPEN:
            return self._probes_allowed < self.spec.half_open_probes
        return self._state is BreakerState.CLOSED

    def record(self, ok: bool, duration: float, now: float) -> Transition | None:
        """Count one outcome; returns the transition it caused, if any."""
        self._advance(now)
        if self._state is BreakerState.OPEN:
            return None  # a straggler from before the trip says nothing about now
        self._window.append((not ok, duration >= self.spec.slow_call_duration))
        return self._evaluate(now)

    def record_counts(
        self, succeeded: int, failed: int, slow: int, now: float
    ) -> Transition | None:
        """Heartbeat counter deltas (``fleet.model.VersionDelta``) as one batch of outcomes.

        Only the last ``window`` outcomes matter, so a large delta is scaled down to the window
        keeping its failure and slow shares.
        """
        total = succeeded + failed
        if total <= 0:
            return None
        scale = min(1.0, self.spec.window / total)
        failures = round(failed * scale)
        calls = max(1, round(total * scale))
        slow_calls = round(min(slow, total) * scale)
        self._advance(now)
        if self._state is BreakerState.OPEN:
            return None  # stragglers from before the trip say nothing about now
        # The whole delta, then one judgement: replayed and judged call by call, a prefix of
        # only failures (4 of 100 read as 4 of the first 20) would trip a 5 % breaker.
        for index in range(calls):
            self._window.append((index < failures, index < slow_calls))
        return self._evaluate(now)

    def take_transitions(self) -> list[Transition]:
        taken, self.transitions = self.transitions, []
        return taken

    @property
    def calls(self) -> int:
        """Outcomes in the current window."""
        return len(self._window)

    @property
    def open_until(self) -> float | None:
        """When an OPEN breaker lets half-open probes through (None unless OPEN)."""
        return self._open_until if self._state is BreakerState.OPEN else None

    def rates(self) -> tuple[float, float]:
        """(failure rate, slow-call rate) over the current window."""
        calls = len(self._window)
        if not calls:
            return 0.0, 0.0
        failed = sum(1 for bad, _ in self._window if bad)
        slow = sum(1 for _, is_slow in self._window if is_slow)
        return failed / calls, slow / calls

    def _tripped(self) -> bool:
        failure, slow = self.rates()
        return failure >= self.spec.failure_rate or slow >= self.spec.slow_call_rate

    def _evaluate(self, now: float) -> Transition | None:
        calls = len(self._window)
        if self._state is BreakerState.CLOSED:
            if calls >= self.spec.min_calls and self._tripped():
                return self._open(now)
            return None
        if calls < self.spec.half_open_probes:
            return None
        if self._tripped():
            return self._open(now)
        self._openings = 0
        return self._move(BreakerState.CLOSED, now)

    def _open(self, now: float) -> Transition:
        self._openings += 1
        wait = min(self.spec.max_open_for, self.spec.open_for * 2 ** (self._openings - 1))
        self._open_until = now + wait
        return self._move(BreakerState.OPEN, now)

    def _advance(self, now: float) -> None:
        if self._state is BreakerState.OPEN and now >= self._open_until:
            self._probes_allowed = 0
            self._move(BreakerState.HALF_OPEN, now)

    def _move(self, after: BreakerState, now: float) -> Transition:
        failure, slow = self.rates()
        transition = Transition(
            self.key,
            self._state,
            after,
            now,
            failure,
            slow,
            self._open_until if after is BreakerState.OPEN else None,
        )
        self._state = after
        # Each state judges only its own calls (resilience4j resets the window on a change).
        self._window = deque(maxlen=self.spec.window)
        self.transitions.append(transition)
        return transition


class BreakerBoard:
    """Breakers by key (agent version), created on first use with that key's thresholds."""

    def __init__(self, spec_for: Callable[[str], BreakerSpec] | None = None) -> None:
        self._spec_for = spec_for or (lambda _key: BreakerSpec())
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, key: str) -> CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(key, self._spec_for(key))
        return breaker

    def allow(self, key: str, now: float) -> bool:
        breaker = self._breakers.get(key)
        # No breaker yet = no outcome seen yet = closed; creating one per request costs a dict.
        return True if breaker is None else breaker.allow(now)

    def respec(self, spec_for: Callable[[str], BreakerSpec]) -> None:
        """Thresholds from ``spec_for`` from now on, for existing breakers too."""
        self._spec_for = spec_for
        for key, breaker in self._breakers.items():
            spec = spec_for(key)
            if spec != breaker.spec:
                breaker.respec(spec)

    def would_allow(self, key: str, now: float) -> bool:
        breaker = self._breakers.get(key)
        return True if breaker is None else breaker.would_allow(now)

    def take_transitions(self) -> list[Transition]:
        taken: list[Transition] = []
        for breaker in self._breakers.values():
            if breaker.transitions:
                taken.extend(breaker.take_transitions())
        return taken

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(self._breakers.values())


def version_chain(requested: str, fallback: str | None) -> tuple[str, ...]:
    """Versions to try in order: the requested one, then the configured fallback."""
    return (requested, fallback) if fallback and fallback != requested else (requested,)


def choose_version(chain: tuple[str, ...], allow: Callable[[str], bool]) -> tuple[str | None, bool]:
    """(first version whose breaker allows it, whether it is a fallback); (None, True) means
    MAINTENANCE. ``allow`` may use up a half-open probe, so it is asked in order and stops."""
    for index, version in enumerate(chain):
        if allow(version):
            return version, index > 0
    return None, True
