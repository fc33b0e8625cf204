"""``dispatcher demo``: the one-command system tells its whole story, headless."""

from __future__ import annotations

import json
import subprocess

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
