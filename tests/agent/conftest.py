"""A grpc.aio server on a free loopback port serving only AgentService, and its stub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from dispatcher.fleet.memory import MemoryClusterRegistry
from dispatcher.fleet.registry import RegistrySettings
from dispatcher.rpc.agent_service import AgentServicer
from dispatcher.v1 import agent_pb2, agent_pb2_grpc, common_pb2

TOKENS = {"c1": "token-of-c1", "c2": "token-of-c2"}


@dataclass
class AgentServer:
    server: grpc.aio.Server
    servicer: AgentServicer
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        self.servicer.close_streams()
        await self.server.stop(grace=0.5)


async def start_agent_server(servicer: AgentServicer, port: int = 0) -> AgentServer:
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return AgentServer(server, servicer, bound)


@pytest.fixture
async def agent_server() -> AsyncIterator[AgentServer]:
    registry = MemoryClusterRegistry(RegistrySettings(interval=0.05, min_report_gap=0))
    running = await start_agent_server(AgentServicer(registry, tokens=TOKENS))
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def stub(agent_server: AgentServer) -> AsyncIterator[agent_pb2_grpc.AgentServiceStub]:
    async with grpc.aio.insecure_channel(agent_server.address) as channel:
        yield agent_pb2_grpc.AgentServiceStub(channel)


def bearer(cluster_id: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[cluster_id]}"),)


def announce_report(cluster_id: str = "c1", seq: int = 1) -> agent_pb2.AgentReport:
    return agent_pb2.AgentReport(
        seq=seq,
        cluster_id=cluster_id,
        boot_id="boot-a",
        announce=agent_pb2.ClusterAnnouncement(
            region="westeurope",
            endpoint=f"{cluster_id}.example:443",
            slots=8,
            lanes=[common_pb2.LaneCapacity(lane=common_pb2.TASK_CLASS_HEAVY, slots=2)],
            agent_versions=["auditor@16.4"],
            pool_ids=["openai/org-x"],
        ),
        load=agent_pb2.LoadReport(cpu_utilization=0.25, in_flight=1),
    )


def load_report(cluster_id: str = "c1", seq: int = 2, cpu: float = 0.5) -> agent_pb2.AgentReport:
    return agent_pb2.AgentReport(
        seq=seq,
        cluster_id=cluster_id,
        boot_id="boot-a",
        load=agent_pb2.LoadReport(cpu_utilization=cpu, in_flight=2),
    )
