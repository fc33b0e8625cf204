"""The simulator runs end to end; behaviour only (the numbers go to notes, DESIGN §4)."""

from __future__ import annotations

import json

import pytest

from bench.simulate import main


def test_tiny_run_reports_every_policy_and_jsq_is_no_worse_than_round_robin(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["--hours", "0.2", "--seeds", "1", "--jobs", "1", "--load", "0.9", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    policies = report["policies"]
    assert {"round_robin", "weighted_round_robin", "least_outstanding", "p2c", "jsq_bound"} <= set(
        policies
    )
    for row in policies.values():
        assert row["tasks"] > 0
        assert row["p50_s"] <= row["p99_s"] <= row["p999_s"]
    assert policies["jsq_bound"]["p99_s"] <= policies["round_robin"]["p99_s"]
    assert set(report["ratios"]) == {"default_vs_jsq", "wrr_vs_default"}


def test_short_first_queue_runs(capsys: pytest.CaptureFixture[str]) -> None:
    main(
        [
            "--hours",
            "0.1",
            "--seeds",
            "2",
            "--jobs",
            "1",
            "--queue",
            "short-first",
            "--policies",
            "p2c",
        ]
    )
    assert "p2c" in capsys.readouterr().out
