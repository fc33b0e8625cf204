"""Report values a cluster can get wrong are refused at construction, naming the wire field."""

from __future__ import annotations

import math

import pytest

from dispatcher.errors import InvalidArgument
from dispatcher.fleet import codec
from dispatcher.fleet.model import (
    ClusterLoad,
    Lane,
    LaneCapacity,
    LaneLoad,
    UsageReport,
    VersionCounters,
)
from tests.fleet.conftest import info


@pytest.mark.parametrize(
    ("load", "field"),
    [
        ({"cpu": math.nan}, "load.cpu_utilization"),
        ({"cpu": 1.5}, "load.cpu_utilization"),
        ({"mem": -0.1}, "load.mem_utilization"),
        ({"app_utilization": math.inf}, "load.application_utilization"),
        ({"rps": -1.0}, "load.rps_fractional"),
        ({"named_metrics": {f"k{i}": 1.0 for i in range(65)}}, "load.named_metrics"),
        ({"named_metrics": {"x" * 65: 1.0}}, "load.named_metrics"),
        ({"named_metrics": {"queue": math.nan}}, "load.named_metrics[queue]"),
        ({"versions": (VersionCounters("v@1"), VersionCounters("v@1"))}, "versions"),
    ],
)
def test_bad_load_values_name_their_field(load: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        ClusterLoad(**load)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_app_utilization_may_exceed_one_when_tasks_queue() -> None:
    assert ClusterLoad(app_utilization=2.5).app_utilization == 2.5


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"slots": 0}, "announce.slots"),
        ({"region": ""}, "announce.region"),
        ({"lanes": (LaneCapacity(Lane.HEAVY, 17),)}, "announce.lanes"),
        ({"pool_ids": ("",)}, "announce.pool_ids[0]"),
    ],
)
def test_bad_announcements_name_their_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        info("c1", **changes)
    assert caught.value.field == field


def test_final_usage_needs_an_outcome() -> None:
    with pytest.raises(InvalidArgument) as caught:
        UsageReport("r1", "res-1", final=True)
    assert caught.value.field == "usage[r1].outcome"


def test_codec_round_trips_info_and_load() -> None:
    announced = info("c1", lanes=(LaneCapacity(Lane.HEAVY, 4),))
    assert codec.decode_info(codec.encode_info(announced)) == announced
    load = ClusterLoad(
        cpu=0.25,
        in_flight=3,
        lanes=(LaneLoad(Lane.LIGHT, 1, 0),),
        versions=(VersionCounters("v@1", 5, 4, 1, 0, 2),),
        named_metrics={"queue": 2.0},
        reported_at=12.5,
    )
    assert codec.decode_load(codec.encode_load(load), 12.5) == load
