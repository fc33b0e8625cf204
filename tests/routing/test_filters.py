"""Filters: each excluded cluster carries its machine-readable reason; stale fails open."""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher.routing import Outcome, Reason
from tests.routing.helpers import cluster, engine, request

NOW = 10.0


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"admin_state": "drain"}, Reason.DRAINING),
        ({"admin_state": "maint"}, Reason.MAINTENANCE),
        ({"ejected": True}, Reason.EJECTED),
        ({"forbidden": True}, Reason.FORBIDDEN),
        ({"versions": frozenset({"auditor@1"})}, Reason.VERSION_NOT_SERVED),
        ({"backends": frozenset({"other"})}, Reason.BACKEND_NOT_SERVED),
        ({"weight_percent": 0}, Reason.WEIGHT_ZERO),
        ({"heartbeat_at": -60.0}, Reason.STALE),
        ({"in_flight": 10, "heartbeat_at": NOW}, Reason.LANE_FULL),
    ],
)
def test_each_filter_names_its_reason(fields: dict[str, Any], reason: Reason) -> None:
    subject = cluster("x", **fields)
    routing = engine(subject, cluster("ok", heartbeat_at=NOW), stale_after=15.0)
    decision = routing.decide(request(version="2"), NOW, explain=True)
    assert decision.reasons == {"x": reason.value, "ok": ""}
    assert decision.cluster_id == "ok"


@pytest.mark.parametrize("reason", [Reason.STALE, Reason.LANE_FULL])
def test_soft_reasons_keep_the_cluster_in_the_spillover_list(reason: Reason) -> None:
    fields: dict[str, Any] = {"heartbeat_at": NOW, "in_flight": 10}
    if reason is Reason.STALE:
        fields = {"heartbeat_at": -60.0}
    routing = engine(cluster("x", **fields), cluster("ok", heartbeat_at=NOW))
    decision = routing.decide(request(), NOW)
    assert [c.cluster_id for c in decision.choices] == ["ok", "x"]


def test_stale_counts_as_fully_loaded() -> None:
    routing = engine(
        cluster("stale", heartbeat_at=-60.0), cluster("busy", in_flight=8, heartbeat_at=NOW)
    )
    for _ in range(20):
        assert routing.decide(request(), NOW).cluster_id == "busy"


def test_every_cluster_stale_fails_open_on_the_last_numbers() -> None:
    routing = engine(
        cluster("a", in_flight=10, heartbeat_at=-100.0), cluster("b", heartbeat_at=-100.0)
    )
    decision = routing.decide(request(), NOW, explain=True)
    assert decision.outcome is Outcome.ROUTED
    assert decision.cluster_id == "b"
    assert decision.reasons == {"a": "lane_full", "b": ""}


def test_no_eligible_cluster_is_no_candidate() -> None:
    routing = engine(cluster("a", admin_state="drain"))
    decision = routing.decide(request(), NOW)
    assert decision.outcome is Outcome.NO_CANDIDATE
    assert decision.choices == ()


def test_backend_without_clusters_is_tripped_and_the_split_renormalises() -> None:
    routing = engine(cluster("a", backends=frozenset({"gpt"})))
    decisions = [routing.decide(request(), NOW) for _ in range(50)]
    assert {d.backend for d in decisions} == {"gpt"}


def test_blocked_quota_pools_filter_clusters_that_draw_only_on_them() -> None:
    routing = engine(cluster("a", pool_ids=("p1",)), cluster("b", pool_ids=("p1", "p2")))
    routing.set_blocked_pools({"p1"})
    decision = routing.decide(request(), NOW, explain=True)
    assert decision.reasons == {"a": "quota_blocked", "b": ""}
