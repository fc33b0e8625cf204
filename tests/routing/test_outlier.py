"""Outlier ejection (Envoy): streaks eject, time grows and caps, never the last cluster."""

from __future__ import annotations

from random import Random

import pytest

from dispatcher.routing import Outcome
from dispatcher.routing.outlier import Ejection, OutlierDetector
from tests.routing.helpers import cluster, engine, request

CLUSTERS = ("a", "b")


def fail(
    detector: OutlierDetector, cid: str, times: int, now: float = 0.0
) -> list[Ejection | None]:
    return [detector.record(cid, ok=False, now=now, clusters=CLUSTERS) for _ in range(times)]


def test_five_consecutive_errors_eject_for_thirty_seconds() -> None:
    detector = OutlierDetector(jitter=0.0)
    results = fail(detector, "a", 5)
    assert results[:4] == [None] * 4
    assert detector.is_ejected("a", 29.9)
    assert not detector.is_ejected("a", 30.0)


def test_a_success_resets_the_streak() -> None:
    detector = OutlierDetector(jitter=0.0)
    fail(detector, "a", 4)
    detector.record("a", ok=True, now=0.0, clusters=CLUSTERS)
    fail(detector, "a", 4)
    assert not detector.is_ejected("a", 0.0)


def test_ejection_time_grows_with_times_ejected_and_caps() -> None:
    detector = OutlierDetector(base_ejection=30.0, max_ejection=70.0, jitter=0.0)
    durations = []
    now = 0.0
    for _ in range(4):
        ejection = next(e for e in fail(detector, "a", 5, now) if e is not None)
        durations.append(ejection.until - ejection.at)
        now = ejection.until
    assert durations == [30.0, 60.0, 70.0, 70.0]


def test_jitter_stays_within_its_fraction() -> None:
    detector = OutlierDetector(jitter=0.1, rng=Random(3))
    ejection = next(e for e in fail(detector, "a", 5) if e is not None)
    assert 30.0 <= ejection.until <= 33.0


def test_never_ejects_the_last_healthy_cluster() -> None:
    detector = OutlierDetector(jitter=0.0)
    fail(detector, "a", 5)
    assert all(result is None for result in fail(detector, "b", 20))
    assert not detector.is_ejected("b", 1.0)


@pytest.mark.parametrize(
    ("panic", "outcome"), [("fail_open", Outcome.ROUTED), ("fail_closed", Outcome.NO_CANDIDATE)]
)
def test_panic_setting_decides_when_every_cluster_is_ejected(panic: str, outcome: Outcome) -> None:
    routing = engine(cluster("a", ejected=True), cluster("b", ejected=True), panic=panic)
    assert routing.decide(request(), 1.0).outcome is outcome


def test_engine_ejects_on_settles_and_takes_the_cluster_back_later() -> None:
    routing = engine(cluster("a"), cluster("b"))
    for _ in range(5):
        routing.on_complete("a", "standard", version="auditor", ok=False, now=1.0)
    assert {routing.decide(request(), 2.0).cluster_id for _ in range(20)} == {"b"}
    assert "a" in {routing.decide(request(), 40.0).cluster_id for _ in range(40)}


def test_ejection_reads_until_when_and_how_often() -> None:
    detector = OutlierDetector(jitter=0.0)
    assert detector.ejection("a", 0.0) == (None, 0)
    fail(detector, "a", 5)
    assert detector.ejection("a", 10.0) == (30.0, 1)
    assert detector.ejection("a", 31.0) == (None, 1)
