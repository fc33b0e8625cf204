"""The worker SDK through the local HTTP API, into the agent's state and outbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from regional_agent.local_api import LocalApi
from regional_agent.outbox import Outbox
from regional_agent.sdk import WorkerApiError, WorkerClient
from regional_agent.state import LocalState


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[LocalApi]:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    local = LocalApi(LocalState(slots=2), outbox)
    await local.start("127.0.0.1", 0)
    try:
        yield local
    finally:
        await local.aclose()
        outbox.close()


@pytest.fixture
def client(api: LocalApi) -> WorkerClient:
    return WorkerClient(f"127.0.0.1:{api.port}")


async def test_a_task_lifecycle_updates_load_and_counters(
    api: LocalApi, client: WorkerClient
) -> None:
    await asyncio.to_thread(client.report_start, "t1", "auditor@16.4", "heavy")
    await asyncio.to_thread(client.report_start, "t2", "auditor@16.4")
    await asyncio.to_thread(client.report_start, "t3", "auditor@16.4")
    snapshot = api.state.snapshot()
    assert (snapshot.in_flight, snapshot.queue_depth, snapshot.app_utilization) == (3, 1, 1.5)
    await asyncio.to_thread(client.report_finish, "t1", "success")
    await asyncio.to_thread(client.report_finish, "t2", "timeout")
    tally = api.state.versions["auditor@16.4"]
    assert (tally.started, tally.succeeded, tally.failed, tally.slow, tally.in_flight) == (
        3,
        1,
        1,
        1,
        1,
    )


async def test_usage_is_in_the_outbox_when_the_call_returns(
    api: LocalApi, client: WorkerClient
) -> None:
    report_id = await asyncio.to_thread(
        client.report_usage,
        "res-1",
        input_tokens=900,
        output_tokens=300,
        final=True,
        outcome="success",
    )
    [stored] = api.outbox.pending()
    assert stored.report_id == report_id
    assert (stored.usage.input_tokens, stored.usage.output_tokens, stored.final) == (900, 300, True)


async def test_provider_headers_become_an_observation(api: LocalApi, client: WorkerClient) -> None:
    headers = {"x-ratelimit-remaining-tokens": "0", "retry-after-ms": "250"}
    await asyncio.to_thread(client.report_headers, "azure/eastus2/gpt-4o", headers, 429)
    [(pool_id, observation)] = api.state.take_observations()
    assert pool_id == "azure/eastus2/gpt-4o"
    assert observation.rate_limited
    assert observation.retry_after_s == 0.25


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/v1/usage", b'{"requests": 1}', 400, "reservation_id: required"),
        ("/v1/usage", b'{"reservation_id": "r", "final": true}', 400, "outcome"),
        ("/v1/usage", b'{"reservation_id": "r", "requests": -1}', 400, "requests"),
        ("/v1/tasks/start", b'{"task_id": "t", "agent_version": "v", "lane": "x"}', 400, "lane"),
        ("/v1/tasks/finish", b'{"task_id": "nope", "outcome": "success"}', 404, "nope"),
        ("/v1/tasks/start", b"[1]", 400, "(body)"),
        ("/v1/tasks/start", b"{", 400, "invalid JSON"),
        ("/v1/nothing", b"{}", 404, "no such endpoint"),
    ],
)
def test_bad_calls_name_the_problem(
    tmp_path: Path, path: str, body: bytes, status: int, error: str
) -> None:
    local = LocalApi(LocalState(slots=1), Outbox(":memory:"))
    got_status, reply = local.handle("POST", path, body)
    assert got_status == status
    assert error in reply["error"]


async def test_sdk_raises_when_the_agent_refuses(client: WorkerClient) -> None:
    with pytest.raises(WorkerApiError, match="404"):
        await asyncio.to_thread(client.report_finish, "never-started", "success")
