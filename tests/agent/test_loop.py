"""The agent loop against a real server: reconnects, outbox resend, DRAIN on stop."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import pytest

from dispatcher.fleet.memory import MemoryClusterRegistry
from dispatcher.fleet.model import AdminState, UsageReport
from dispatcher.fleet.registry import RegistrySettings
from dispatcher.rpc.agent_service import AgentServicer
from dispatcher.v1 import agent_pb2, common_pb2
from regional_agent.collectors import HostCollector
from regional_agent.config import AgentConfig
from regional_agent.loop import AgentLoop
from regional_agent.outbox import Outbox
from regional_agent.state import LocalState
from tests.agent.conftest import AgentServer, start_agent_server

DEADLINE_S = 10.0


async def wait_until(condition: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Poll ``condition`` until it holds, failing after a bounded deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while not await _holds(condition):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _holds(condition: Callable[[], bool | Awaitable[bool]]) -> bool:
    result = condition()
    return await result if inspect.isawaitable(result) else result


class UsageSink:
    """An ``on_usage`` that records what arrived and confirms it durable only when told."""

    def __init__(self, durable: bool) -> None:
        self.durable = durable
        self.received: list[str] = []

    async def __call__(self, cluster_id: str, reports: Sequence[UsageReport]) -> list[str]:
        ids = [r.report_id for r in reports]
        self.received.extend(ids)
        return ids if self.durable else []


def add_usage(outbox: Outbox, n: int) -> list[str]:
    return [
        outbox.add(
            agent_pb2.UsageReport(
                reservation_id=f"res-{i}",
                usage=common_pb2.Usage(requests=1, input_tokens=100),
                final=True,
                outcome=common_pb2.TASK_OUTCOME_SUCCESS,
            )
        )
        for i in range(n)
    ]


@pytest.fixture
def registry() -> MemoryClusterRegistry:
    """Shared by the servers of one test, as replicas share Redis."""
    return MemoryClusterRegistry(RegistrySettings(interval=0.05))


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.sqlite3")
    yield box
    box.close()


async def announced(registry: MemoryClusterRegistry) -> bool:
    return any(state.id == "c1" for state in await registry.list())


def agent_config(address: str, tmp_path: Path) -> AgentConfig:
    return AgentConfig(
        cluster_id="c1",
        region="westeurope",
        endpoint="c1.example:443",
        slots=4,
        versions=("auditor@16.4",),
        dispatcher=address,
        interval=0.05,
        reconnect_min=0.02,
        reconnect_max=0.1,
        outbox=tmp_path / "outbox.sqlite3",
    )


async def test_agent_reconnects_to_a_new_server_and_resends_unacked_usage(
    tmp_path: Path, registry: MemoryClusterRegistry, outbox: Outbox
) -> None:
    first_sink, second_sink = UsageSink(durable=False), UsageSink(durable=True)
    first = await start_agent_server(AgentServicer(registry, on_usage=first_sink))
    servers: list[AgentServer] = [first]
    state = LocalState(slots=4)
    agent = AgentLoop(agent_config(first.address, tmp_path), state, outbox, HostCollector())
    stop = asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    try:
        early = add_usage(outbox, 3)
        await wait_until(lambda: set(first_sink.received) >= set(early), "first delivery")
        await first.stop()
        late = add_usage(outbox, 2)  # written while no dispatcher is up
        servers.append(
            await start_agent_server(AgentServicer(registry, on_usage=second_sink), port=first.port)
        )
        await wait_until(lambda: outbox.count() == 0, "outbox to drain")
        assert set(second_sink.received) == set(early + late), "every report resent, none lost"
        assert agent.sessions >= 2
    finally:
        stop.set()
        await asyncio.wait_for(running, DEADLINE_S)
        for server in servers:
            await server.stop()


async def test_stop_reports_drain_before_closing_the_stream(
    tmp_path: Path, registry: MemoryClusterRegistry, outbox: Outbox
) -> None:
    server = await start_agent_server(AgentServicer(registry))
    state = LocalState(slots=4)
    agent = AgentLoop(agent_config(server.address, tmp_path), state, outbox, HostCollector())
    stop = asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    try:
        state.start("t1", "auditor@16.4")
        await wait_until(lambda: announced(registry), "announce")
        stop.set()
        await asyncio.wait_for(running, DEADLINE_S)
        cluster = await registry.get("c1")
        assert cluster.agent_admin_state is AdminState.DRAIN
        assert cluster.load is not None
        assert cluster.load.in_flight == 1
    finally:
        await server.stop()


def test_backoff_grows_with_failures_and_stays_jittered(tmp_path: Path, outbox: Outbox) -> None:
    agent = AgentLoop(
        agent_config("127.0.0.1:1", tmp_path), LocalState(slots=1), outbox, HostCollector()
    )
    delays = [agent.backoff(n) for n in range(10)]
    assert all(0.01 <= d <= 0.1 for d in delays)
    assert len(set(delays)) > 1


async def test_the_agent_takes_the_interval_the_dispatcher_pushes(
    tmp_path: Path, registry: MemoryClusterRegistry, outbox: Outbox
) -> None:
    """Configured at 0.05 s, told 0.2 s by a dispatcher running at 0.2 s: it follows."""
    server = await start_agent_server(AgentServicer(registry, report_interval=0.2))
    agent = AgentLoop(
        agent_config(server.address, tmp_path), LocalState(slots=4), outbox, HostCollector()
    )
    stop = asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    try:
        await wait_until(lambda: agent.interval == 0.2, "the pushed interval")
    finally:
        stop.set()
        await asyncio.wait_for(running, DEADLINE_S)
        await server.stop()
