"""The real dispatcher SIGKILLed and started again on its port, with the real agent beside it.

Also: the agent's first report after a (re)connect respects the dispatcher's flood rule.

The dispatcher runs as ``dispatcher serve`` in a subprocess (embedded defaults: memory hot
store, a SQLite ledger file both incarnations share) with a 0.5 s heartbeat interval. The
agent is the real ``AgentLoop`` with its local API and on-disk outbox, in this process, so
the test can see which report ids the dispatcher acked durable. A worker reports usage through
the SDK before the kill and while no dispatcher is up.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from dispatcher.fleet.memory import MemoryClusterRegistry
from dispatcher.fleet.model import ClusterReport, ReportOutcome
from dispatcher.fleet.registry import RegistrySettings
from dispatcher.rpc.agent_service import AgentServicer
from dispatcher.v1 import admin_pb2, admin_pb2_grpc
from regional_agent.collectors import HostCollector
from regional_agent.config import AgentConfig
from regional_agent.local_api import LocalApi
from regional_agent.loop import AgentLoop
from regional_agent.outbox import Outbox
from regional_agent.sdk import WorkerClient
from regional_agent.state import LocalState
from tests.agent.conftest import start_agent_server
from tests.agent.test_loop import DEADLINE_S, wait_until
from tests.serving import dispatcher_cmd, sqlite_url, wait_for_serving

HEARTBEAT_S = 0.5
CLUSTER = "restart-1"


class RecordingOutbox(Outbox):
    """The real outbox, remembering every id an Ack confirmed durable."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.durable: set[str] = set()

    def mark_durable(self, report_ids: Iterable[str]) -> int:
        ids = list(report_ids)
        self.durable.update(ids)
        return super().mark_durable(ids)


@dataclass
class Dispatcher:
    proc: subprocess.Popen[str]
    address: str
    serving_at: float  # monotonic time its "serving" line was read
    reader: threading.Thread

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])


def _drain_stderr(proc: subprocess.Popen[str]) -> None:
    # Warnings per dropped usage report must never block the server on a full pipe.
    assert proc.stderr is not None
    for _ in proc.stderr:
        pass


def spawn_dispatcher(tmp_path: Path, port: int) -> Dispatcher:
    """``dispatcher serve`` on ``port`` (0: any); returns once it logged ``serving``."""
    config = tmp_path / "dispatcher.yaml"
    config.write_text(f"routing:\n  heartbeat_interval: {HEARTBEAT_S}s\n")
    listen, database = f"127.0.0.1:{port}", sqlite_url(tmp_path)
    args = ["--listen", listen, "--log-format", "json", "--config", str(config),
            "--database-url", database]  # fmt: skip
    proc = subprocess.Popen(dispatcher_cmd("serve", *args), stderr=subprocess.PIPE, text=True)
    address = wait_for_serving(proc)
    serving_at = time.monotonic()
    reader = threading.Thread(target=_drain_stderr, args=(proc,), daemon=True)
    reader.start()
    return Dispatcher(proc, address, serving_at, reader)


async def start_dispatcher(tmp_path: Path, port: int = 0) -> Dispatcher:
    # In a thread: the agent's event loop keeps retrying while the server starts.
    return await asyncio.to_thread(spawn_dispatcher, tmp_path, port)


def stop_dispatcher(dispatcher: Dispatcher, sig: signal.Signals = signal.SIGTERM) -> None:
    if dispatcher.proc.poll() is None:
        dispatcher.proc.send_signal(sig)
    dispatcher.proc.wait(timeout=DEADLINE_S)
    dispatcher.reader.join(DEADLINE_S)  # EOF once the process is gone
    if dispatcher.proc.stderr is not None:
        dispatcher.proc.stderr.close()


@dataclass
class Agent:
    loop: AgentLoop
    outbox: RecordingOutbox
    worker: WorkerClient


@asynccontextmanager
async def running_agent(tmp_path: Path, dispatcher_address: str) -> AsyncIterator[Agent]:
    """The pieces ``regional_agent.runner.run_agent`` wires, with the outbox observable."""
    config = AgentConfig(
        cluster_id=CLUSTER,
        region="westeurope",
        endpoint=f"{CLUSTER}.example:443",
        slots=4,
        versions=("auditor@16.4",),
        dispatcher=dispatcher_address,
        interval=HEARTBEAT_S,
        # Retries while the dispatcher is down stay well inside one heartbeat interval.
        reconnect_min=0.05,
        reconnect_max=0.2,
        outbox=tmp_path / "outbox.sqlite3",
        local_api="127.0.0.1:0",
    )
    outbox = RecordingOutbox(config.outbox)
    state = LocalState(slots=config.slots)
    api = LocalApi(state, outbox)
    await api.start("127.0.0.1", 0)
    loop = AgentLoop(config, state, outbox, HostCollector())
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        yield Agent(loop, outbox, WorkerClient(f"127.0.0.1:{api.port}"))
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE_S)
        await api.aclose()
        outbox.close()


@contextmanager
def killed_at_exit(dispatchers: list[Dispatcher]) -> Iterator[None]:
    try:
        yield
    finally:
        for dispatcher in dispatchers:
            stop_dispatcher(dispatcher, signal.SIGKILL)


async def cluster_live(address: str, boot_id: str) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        try:
            reply = await stub.ListClusters(admin_pb2.ListClustersRequest(), timeout=2.0)
        except grpc.aio.AioRpcError:
            return False
    return any(c.cluster.id == CLUSTER and c.live and c.boot_id == boot_id for c in reply.clusters)


def run_tasks(worker: WorkerClient, prefix: str, n: int) -> list[str]:
    """``n`` tasks, each started, charged and finished through the SDK; the usage report ids."""
    ids = []
    for i in range(n):
        task_id = f"{prefix}-{i}"
        worker.report_start(task_id, "auditor@16.4")
        report_id = worker.report_usage(
            f"res-{task_id}", input_tokens=900, output_tokens=300, final=True, outcome="success"
        )
        ids.append(report_id)
        worker.report_finish(task_id, "success")
    return ids


async def test_agent_survives_a_dispatcher_sigkill_and_loses_no_usage(tmp_path: Path) -> None:
    dispatchers = [await start_dispatcher(tmp_path)]
    with killed_at_exit(dispatchers):
        first = dispatchers[0]
        async with running_agent(tmp_path, first.address) as agent:
            boot_id = agent.loop.boot_id
            await wait_until(lambda: cluster_live(first.address, boot_id), "first announce")
            before = await asyncio.to_thread(run_tasks, agent.worker, "before", 3)
            await wait_until(lambda: agent.outbox.count() == 0, "acks from the first server")

            stop_dispatcher(first, signal.SIGKILL)
            during = await asyncio.to_thread(run_tasks, agent.worker, "during", 5)
            assert agent.outbox.count() == 5, "written while no dispatcher was up"

            second = await start_dispatcher(tmp_path, port=first.port)
            dispatchers.append(second)
            await wait_until(lambda: cluster_live(second.address, boot_id), "reconnect")
            back_after = time.monotonic() - second.serving_at
            await wait_until(lambda: agent.outbox.count() == 0, "outbox to drain")

            assert back_after <= 2 * HEARTBEAT_S, f"live again {back_after:.2f}s after serving"
            assert set(before + during) <= agent.outbox.durable, "every report acked durable"
            assert agent.outbox.count(dead=True) == 0
            assert agent.loop.sessions >= 2


class _CountingRegistry(MemoryClusterRegistry):
    """Counts every report it is asked to record, accepted or not."""

    calls = 0

    async def record(self, report: ClusterReport) -> ReportOutcome:
        self.calls += 1
        return await super().record(report)


class _EarliestPhase(random.Random):
    """Always the lowest phase and backoff the agent may draw: the worst case for a flood."""

    def uniform(self, a: float, b: float) -> float:
        return a


async def test_first_report_after_a_reconnect_is_not_refused_as_a_flood(tmp_path: Path) -> None:
    interval = 1.0  # the dispatcher refuses reports closer than 0.5 s
    registry = _CountingRegistry(RegistrySettings(interval=interval))
    server = await start_agent_server(AgentServicer(registry))
    config = AgentConfig(
        cluster_id=CLUSTER, region="westeurope", endpoint="e:443", slots=1,
        dispatcher=server.address, interval=interval, outbox=tmp_path / "outbox.sqlite3",
    )  # fmt: skip
    outbox = Outbox(config.outbox)
    loop = AgentLoop(config, LocalState(slots=1), outbox, HostCollector(), rng=_EarliestPhase())
    stop = asyncio.Event()
    running = asyncio.create_task(loop.run(stop))
    try:
        await wait_until(lambda: registry.calls >= 3, "announce and two reports")
        assert server.servicer.rejections == {}
    finally:
        stop.set()
        await asyncio.wait_for(running, DEADLINE_S)
        await server.stop()
        outbox.close()
