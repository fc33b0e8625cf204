"""``regional-agent simulate-workers`` against a real local API: the agent's counters move."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from regional_agent import cli
from regional_agent.local_api import LocalApi
from regional_agent.outbox import Outbox
from regional_agent.simulate import SimulationSettings, TaskPlan, plan_task
from regional_agent.state import LocalState

VERSIONS = ("auditor@16.4", "auditor@16.5")


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[LocalApi]:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    local = LocalApi(LocalState(slots=8), outbox)
    await local.start("127.0.0.1", 0)
    try:
        yield local
    finally:
        await local.aclose()
        outbox.close()


async def test_simulated_workers_move_the_agents_counters_through_the_sdk(
    api: LocalApi, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["simulate-workers", "--api", f"127.0.0.1:{api.port}", "--rate", "40",
            "--duration", "1", "--failure-rate", "0.3", "--versions", ",".join(VERSIONS),
            "--time-scale", "0.02", "--seed", "7"]  # fmt: skip
    code = await asyncio.to_thread(cli.main, argv)  # the CLI runs its own event loop
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["api_errors"] == 0
    tallies = api.state.versions
    assert set(tallies) == set(VERSIONS), "every version got tasks"
    assert sum(t.started for t in tallies.values()) == summary["tasks_started"] > 0
    assert all(t.in_flight == 0 for t in tallies.values()), "every task finished"
    assert sum(t.failed for t in tallies.values()) == summary["outcomes"]["failure"] > 0
    assert sum(t.succeeded for t in tallies.values()) == summary["outcomes"]["success"] > 0
    assert api.outbox.count() == summary["usage_reports"] >= summary["tasks_started"]
    observations = api.state.take_observations()
    assert len(observations) == summary["observations"]
    assert sum(o.rate_limited for _, o in observations) == summary["rate_limited"]


def test_task_lengths_are_heavy_tailed_and_the_seed_repeats_them() -> None:
    settings = SimulationSettings(seed=3)

    def plans(seed: int) -> list[TaskPlan]:
        rng = random.Random(seed)
        return [plan_task(rng, settings) for _ in range(2000)]

    lengths = sorted(p.length_s for p in plans(3))
    median, p99 = lengths[len(lengths) // 2], lengths[int(len(lengths) * 0.99)]
    assert p99 > 50 * median, "a few tasks run minutes while most take under a second"
    assert [p.length_s for p in plans(3)] == [p.length_s for p in plans(3)]
    assert {p.lane for p in plans(3)} == {"light", "standard", "heavy"}
