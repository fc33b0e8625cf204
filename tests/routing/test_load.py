"""Local accounting: estimate = heartbeat + own dispatches - own completions since it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.config import DispatcherConfig
from dispatcher.errors import NotFound
from dispatcher.routing import EngineSettings, Request
from dispatcher.routing.capacity import ThroughputEwma, refined_weight, slow_start_factor
from dispatcher.routing.load import LocalLoad
from dispatcher.routing.model import lane_for
from tests.routing.helpers import cluster, engine, request


@given(st.integers(0, 50), st.lists(st.booleans(), max_size=60))
def test_estimate_is_heartbeat_plus_dispatches_minus_completions(
    reported: int, events: list[bool]
) -> None:
    load = LocalLoad()
    load.on_heartbeat("a", reported, at=1.0)
    expected = reported
    for dispatch in events:
        if dispatch:
            load.on_dispatch("a", "standard")
            expected += 1
        else:
            load.on_complete("a", "standard")
            expected = max(0, expected - 1)
    assert load.estimate("a").in_flight == expected


def test_a_heartbeat_resets_local_deltas_and_older_ones_are_ignored() -> None:
    load = LocalLoad()
    load.on_heartbeat("a", 5, at=2.0, lanes={"heavy": 2})
    load.on_dispatch("a", "heavy")
    assert not load.on_heartbeat("a", 0, at=1.0)
    assert (load.estimate("a").in_flight, load.estimate("a").lane("heavy")) == (6, 3)
    assert load.on_heartbeat("a", 4, at=3.0, lanes={"heavy": 1})
    assert (load.estimate("a").in_flight, load.estimate("a").lane("heavy")) == (4, 1)


def test_engine_counts_its_own_dispatches_between_heartbeats() -> None:
    routing = engine(cluster("a", slots=10), cluster("b", slots=10, in_flight=3))
    for _ in range(3):
        routing.on_dispatch("a", "standard")
    routing.on_complete("b", "standard")
    assert (routing.targets["a"].in_flight(), routing.targets["b"].in_flight()) == (3, 2)


@pytest.mark.parametrize(
    ("task_class", "expected_duration", "lane"),
    [
        ("heavy", 0.1, "heavy"),
        (None, 0.5, "light"),
        (None, 30.0, "standard"),
        (None, 121.0, "heavy"),
        (None, None, "standard"),
    ],
)
def test_lane_from_class_or_expected_duration(
    task_class: str | None, expected_duration: float | None, lane: str
) -> None:
    assert lane_for(task_class, expected_duration) == lane


def test_unknown_route_is_not_found() -> None:
    with pytest.raises(NotFound):
        engine(cluster("a")).decide(Request("nope"), 0.0)


@pytest.mark.parametrize(("now", "factor"), [(0.0, 0.1), (30.0, 0.5), (60.0, 1.0), (100.0, 1.0)])
def test_slow_start_ramps_linearly_over_the_window(now: float, factor: float) -> None:
    assert slow_start_factor(now, returned_at=0.0, window=60.0) == pytest.approx(factor)


def test_slow_start_lowers_a_returning_clusters_share() -> None:
    routing = engine(cluster("old", slots=10), cluster("back", slots=10, slow_start_factor=0.1))
    assert routing.targets["back"].weight == pytest.approx(1.0)


def test_refined_weight_follows_throughput_within_bounds() -> None:
    assert refined_weight(10, per_slot=0.2, fleet_per_slot=0.1) == 15.0
    assert refined_weight(10, per_slot=0.08, fleet_per_slot=0.1) == pytest.approx(8.0)
    assert refined_weight(10, per_slot=0.0, fleet_per_slot=0.1) == 10.0
    ewma = ThroughputEwma(half_life=10.0)
    ewma.observe(0, 5.0, at=0.0)
    for second in range(1, 200):
        ewma.observe(2, 4.0, at=float(second))
    assert ewma.rate == pytest.approx(2.0, rel=1e-3)
    assert ewma.per_slot == pytest.approx(0.5, rel=1e-3)


def test_request_helper_lane() -> None:
    assert request("light").lane == "light"


def test_settings_come_from_the_routing_config() -> None:
    routing = DispatcherConfig.model_validate(
        {
            "routing": {
                "heartbeat_interval": "2s",
                "stale_after_intervals": 4,
                "policy": "round_robin",
            }
        }
    ).routing
    settings = EngineSettings.from_config(routing)
    assert (settings.policy, settings.stale_after, settings.panic) == (
        "round_robin",
        8.0,
        "fail_open",
    )


def test_explain_scores_every_eligible_cluster() -> None:
    routing = engine(
        cluster("a", slots=10, in_flight=4), cluster("b", slots=10, admin_state="drain")
    )
    decision = routing.decide(request(), 0.0, explain=True)
    assert decision.scores == {"a": pytest.approx(0.5)}
