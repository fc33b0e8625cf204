"""bench.route's pacing flags refuse values that would not pace, its CPU pinning plan, and its
per-round ratios (pure argument parsing, planning and arithmetic)."""

from __future__ import annotations

import os

import pytest

from bench import route, route_load


@pytest.mark.parametrize("value", ["0", "1.5", "-0.5", "nan"])
def test_light_load_outside_zero_to_one_is_refused_naming_the_flag(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        route.parse_args(["--light-load", value])
    assert "--light-load: must be in (0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_a_rate_that_is_not_finite_and_non_negative_is_refused(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        route_load.parse_args(["--target", "127.0.0.1:1", "--rate", value])
    assert "--rate: must be a finite rate >= 0" in capsys.readouterr().err


def test_sane_pacing_is_taken() -> None:
    assert route.parse_args(["--light-load", "0.5"]).light_load == 0.5
    assert route_load.parse_args(["--target", "h:1", "--rate", "600"]).rate == 600.0


@pytest.mark.parametrize(
    ("cpus", "servers", "others"),
    [({0, 1}, {0}, {1}), ({3, 5, 7, 9}, {3}, {5, 7, 9})],
)
def test_auto_pinning_gives_the_servers_one_cpu_and_the_rest_everything_else(
    monkeypatch: pytest.MonkeyPatch, cpus: set[int], servers: set[int], others: set[int]
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: cpus, raising=False)
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, mask: None, raising=False)
    plan = route.pinning("auto")
    assert plan is not None
    assert (plan.servers, plan.others) == (servers, others)


def test_pinning_is_off_when_asked_or_with_a_single_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert route.pinning("off") is None
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2}, raising=False)
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, mask: None, raising=False)
    assert route.pinning("auto") is None


def test_pinning_defaults_to_auto_and_refuses_other_words(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert route.parse_args([]).pin == "auto"
    with pytest.raises(SystemExit):
        route.parse_args(["--pin", "always"])
    assert "--pin" in capsys.readouterr().err


def test_each_round_is_compared_with_the_baseline_of_the_same_round() -> None:
    routed = route.Phase(rates=[900.0, 700.0])
    empty = route.Phase(rates=[1800.0, 1750.0])
    assert route.ratios_by_round(routed, empty) == [0.5, 0.4]
    assert route.ratios_by_round(routed, route.Phase(rates=[0.0])) == [0.0]


def test_a_phase_is_as_busy_as_its_server_cpu_over_its_timed_window() -> None:
    assert route.Phase(seconds=10.0, server_cpu_s=9.6).busy == 0.96
    assert route.Phase().busy == 0.0  # a phase that never ran
