"""Circuit breaker (resilience4j semantics) and the version fallback chain."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.config import BreakerSpec, load_config
from dispatcher.router.settings import with_operator_settings
from dispatcher.routing import Engine, Outcome
from dispatcher.routing.breaker import BreakerState, CircuitBreaker, choose_version, version_chain
from tests.routing.helpers import cluster, config, request

SPEC = BreakerSpec(window=100, min_calls=20, open_for=30.0, max_open_for=100.0, half_open_probes=3)


def fill(breaker: CircuitBreaker, failures: int, calls: int, now: float = 0.0) -> None:
    # Failures last: with them first the rate would pass 5 % as soon as min_calls is reached.
    for index in range(calls):
        breaker.record(ok=index < calls - failures, duration=1.0, now=now)


def test_five_failures_in_a_hundred_trips_four_does_not() -> None:
    below = CircuitBreaker("v", SPEC)
    fill(below, failures=4, calls=100)
    assert below.state(0.0) is BreakerState.CLOSED
    at = CircuitBreaker("v", SPEC)
    fill(at, failures=0, calls=95)
    fill(at, failures=5, calls=5)
    assert at.state(0.0) is BreakerState.OPEN


def test_nothing_trips_before_min_calls() -> None:
    breaker = CircuitBreaker("v", SPEC)
    fill(breaker, failures=19, calls=19)
    assert breaker.state(0.0) is BreakerState.CLOSED
    breaker.record(ok=False, duration=1.0, now=0.0)
    assert breaker.state(0.0) is BreakerState.OPEN


def test_slow_calls_trip_at_the_slow_call_rate() -> None:
    breaker = CircuitBreaker(
        "v", BreakerSpec(window=20, min_calls=10, slow_call_rate=0.5, slow_call_duration=5.0)
    )
    for _ in range(10):
        breaker.record(ok=True, duration=6.0, now=0.0)
    assert breaker.state(0.0) is BreakerState.OPEN


def test_open_waits_then_half_open_probes_then_closes_on_success() -> None:
    breaker = CircuitBreaker("v", SPEC)
    fill(breaker, failures=20, calls=20)
    assert not breaker.allow(29.9)
    assert breaker.state(30.0) is BreakerState.HALF_OPEN
    assert [breaker.allow(30.0) for _ in range(4)] == [True, True, True, False]
    for _ in range(3):
        breaker.record(ok=True, duration=1.0, now=31.0)
    assert breaker.state(31.0) is BreakerState.CLOSED
    assert [(t.before, t.after) for t in breaker.take_transitions()] == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]


def test_failed_probe_reopens_with_a_longer_capped_wait() -> None:
    breaker = CircuitBreaker("v", SPEC)
    fill(breaker, failures=20, calls=20)
    waits = []
    now = 0.0
    for _ in range(4):
        opened = breaker.transitions[-1]
        assert opened.after is BreakerState.OPEN
        assert opened.open_until is not None
        waits.append(opened.open_until - opened.at)
        now = opened.open_until
        assert breaker.allow(now)
        transition = breaker.record(ok=False, duration=1.0, now=now)
        assert transition is None  # two more probes to go
        breaker.record(ok=True, duration=1.0, now=now)
        breaker.record(ok=True, duration=1.0, now=now)
    assert waits == [30.0, 60.0, 100.0, 100.0]


def test_success_after_reopening_resets_the_backoff() -> None:
    breaker = CircuitBreaker("v", SPEC)
    fill(breaker, failures=20, calls=20)
    for _ in range(3):
        breaker.record(ok=True, duration=1.0, now=30.0)
    fill(breaker, failures=20, calls=20, now=40.0)
    opened = breaker.transitions[-1]
    assert opened.open_until == 70.0


def test_heartbeat_counters_feed_the_window() -> None:
    breaker = CircuitBreaker("v", SPEC)
    breaker.record_counts(succeeded=950, failed=50, slow=0, now=0.0)
    assert breaker.state(0.0) is BreakerState.OPEN


@given(st.integers(1, SPEC.window), st.floats(0, 1))
def test_a_counter_delta_trips_exactly_when_its_failure_share_reaches_the_threshold(
    calls: int, share: float
) -> None:
    """Judged as one batch: a delta of 4 failures in 100 is 4 %, not 4 of its first 20."""
    failed = round(calls * share)
    breaker = CircuitBreaker("v", SPEC)
    breaker.record_counts(succeeded=calls - failed, failed=failed, slow=0, now=0.0)
    should_trip = calls >= SPEC.min_calls and failed / calls >= SPEC.failure_rate
    assert (breaker.state(0.0) is BreakerState.OPEN) == should_trip


@given(st.integers(0, 100))
def test_trips_exactly_when_the_failure_rate_reaches_five_percent(failures: int) -> None:
    breaker = CircuitBreaker("v", SPEC)
    for index in range(100):
        # Failures last, so the window is full before the rate can first reach the threshold.
        breaker.record(ok=index < 100 - failures, duration=1.0, now=0.0)
    assert (breaker.state(0.0) is BreakerState.OPEN) == (failures >= 5)


@pytest.mark.parametrize(
    ("open_versions", "expected"),
    [((), ("a@2", False)), (("a@2",), ("a-basic", True)), (("a@2", "a-basic"), (None, True))],
)
def test_fallback_chain(open_versions: tuple[str, ...], expected: tuple[str | None, bool]) -> None:
    chain = version_chain("a@2", "a-basic")
    assert choose_version(chain, lambda v: v not in open_versions) == expected


def test_engine_falls_back_then_answers_maintenance() -> None:
    routing = Engine(config(auditor={"fallback": "auditor-basic", "maintenance_message": "down"}))
    routing.replace([cluster("a")])
    for version in ("auditor", "auditor-basic"):
        breaker = routing.breakers.get(version)
        fill(breaker, failures=50, calls=50)
        decision = routing.decide(request(), 1.0)
        if version == "auditor":
            assert (decision.outcome, decision.version) == (Outcome.FALLBACK, "auditor-basic")
    assert (decision.outcome, decision.message, decision.choices) == (
        Outcome.MAINTENANCE,
        "down",
        (),
    )


def test_heartbeat_counts_trip_the_engine_breaker_and_transitions_are_journalled() -> None:
    routing = Engine(config(auditor={"fallback": "auditor-basic"}))
    routing.replace([cluster("a")])
    transition = routing.on_version_counts("auditor", succeeded=90, failed=10, slow=0, now=5.0)
    assert transition is not None
    assert transition.after is BreakerState.OPEN
    assert routing.decide(request(), 6.0).outcome is Outcome.FALLBACK
    assert [(t.key, t.after) for t in routing.take_transitions()] == [
        ("auditor", BreakerState.OPEN)
    ]
    assert routing.take_transitions() == []


def test_asking_whether_a_half_open_breaker_would_allow_uses_up_no_probe() -> None:
    """Explain asks; only real calls take the limited half-open probes."""
    breaker = CircuitBreaker("v", SPEC)
    fill(breaker, failures=20, calls=20)
    half_open_at = SPEC.open_for + 1.0
    assert breaker.state(half_open_at) is BreakerState.HALF_OPEN
    assert all(breaker.would_allow(half_open_at) for _ in range(10))
    probes = [breaker.allow(half_open_at) for _ in range(SPEC.half_open_probes + 1)]
    assert probes == [True] * SPEC.half_open_probes + [False]
    assert not breaker.would_allow(half_open_at)


def test_new_thresholds_keep_the_recent_calls_and_judge_the_next_one_by_the_new_rate() -> None:
    """An operator's SetBreaker: 4 failures in 99 stay closed at 5 %; with the threshold at
    4 % and a window of 50 (the newest 50 kept, all 4 failures among them), the next call
    is judged on 4/50 and trips it."""
    breaker = CircuitBreaker("v", SPEC)
    fill(breaker, failures=4, calls=99)
    assert breaker.state(0.0) is BreakerState.CLOSED
    breaker.respec(SPEC.model_copy(update={"failure_rate": 0.04, "window": 50}))
    assert breaker.calls == 50  # the newest 50 (4 failures among them, the last ones)
    breaker.record(ok=True, duration=1.0, now=0.0)
    assert breaker.state(0.0) is BreakerState.OPEN


def test_operator_thresholds_reach_versions_the_config_lists_apart() -> None:
    config = load_config(
        None,
        env={},
        overrides={"agents": {"auditor": {}, "auditor@16.4": {"breaker": {"failure_rate": 0.2}}}},
    )
    changed = with_operator_settings(config, {}, {"auditor": {"failure_rate": 0.5}})
    assert changed.agent_spec("auditor@16.4").breaker.failure_rate == 0.5
    assert changed.agent_spec("auditor@17").breaker.failure_rate == 0.5
    assert with_operator_settings(config, {}, {"auditor": {"window": "x"}}) == config  # skipped
