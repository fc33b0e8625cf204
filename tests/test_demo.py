"""``dispatcher demo``: the one-command system tells its whole story, headless."""

from __future__ import annotations

import json
import subprocess

import pytest

from dispatcher.demo.quota_check import QuotaCheck
from tests.serving import dispatcher_cmd


def test_demo_json_shows_spillover_a_breaker_trip_and_handovers_without_over_admission() -> None:
    result = subprocess.run(
        dispatcher_cmd("demo", "--duration", "10", "--json"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["errors"] == 0, summary["error_samples"]
    assert summary["decisions"] > 0
    assert summary["spillovers"] > 0
    assert summary["breaker_trips"] >= 1
    assert summary["outcomes"].get("fallback", 0) > 0
    assert summary["handovers"] >= 1
    assert 0 < summary["over_admission"] <= 1.0
    assert set(summary["per_cluster"]) == {"us-east", "eu-west", "ap-south"}


def test_demo_refuses_a_non_positive_duration() -> None:
    result = subprocess.run(
        dispatcher_cmd("demo", "--duration", "0"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--duration" in result.stderr
    assert "must be > 0" in result.stderr


def test_the_quota_check_flags_admitting_more_than_a_pool_held() -> None:
    check = QuotaCheck()
    check.start("p", at=0.0, limit_tpm=600.0)  # room 600, refills 10 tokens/s
    check.admit("p", at=1.0, tokens=600.0)
    assert check.ratio(end=10.0) == pytest.approx(600 / 700)
    check.admit("p", at=9.0, tokens=150.0)  # 750 admitted, 700 allowed by t=10
    assert check.ratio(end=10.0) == pytest.approx(750 / 700)
    check.refund("p", at=9.5, tokens=100.0)  # given back: room again
    assert check.ratio(end=10.0) == pytest.approx(650 / 700)
    check.limit_changed("p", at=10.0, room=0.0, limit_tpm=60.0)  # lowered: 1 token/s
    check.admit("p", at=15.0, tokens=10.0)  # 10 tokens where 5 had refilled
    assert check.ratio(end=15.0) == pytest.approx(2.0)
