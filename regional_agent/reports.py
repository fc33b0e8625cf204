"""The agent's side of the wire: its config, load and observations as dispatcher.v1 messages."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from dispatcher.fleet.model import Lane
from dispatcher.ledger.model import Observation
from dispatcher.rpc.status import duration_from_seconds
from dispatcher.v1 import agent_pb2, common_pb2
from regional_agent.collectors import Capacity, HostSample
from regional_agent.config import AgentConfig
from regional_agent.state import LoadSnapshot

LANES = {
    Lane.LIGHT: common_pb2.TASK_CLASS_LIGHT,
    Lane.STANDARD: common_pb2.TASK_CLASS_STANDARD,
    Lane.HEAVY: common_pb2.TASK_CLASS_HEAVY,
}


def announcement(config: AgentConfig, capacity: Capacity) -> agent_pb2.ClusterAnnouncement:
    return agent_pb2.ClusterAnnouncement(
        region=config.region,
        endpoint=config.endpoint,
        slots=config.slots,
        cores=config.cores if config.cores is not None else capacity.cores,
        memory_bytes=(
            config.memory_bytes if config.memory_bytes is not None else capacity.memory_bytes
        ),
        lanes=[common_pb2.LaneCapacity(lane=LANES[k], slots=n) for k, n in config.lanes.items()],
        agent_versions=config.versions,
        backends=config.backends,
        pool_ids=config.pool_ids,
        agent_build=_build(),
    )


def _build() -> str:
    try:
        return f"regional-agent {version('agent-dispatcher')}"
    except PackageNotFoundError:
        return "regional-agent (source)"


def load_report(snapshot: LoadSnapshot, host: HostSample) -> agent_pb2.LoadReport:
    return agent_pb2.LoadReport(
        cpu_utilization=host.cpu,
        mem_utilization=host.mem,
        application_utilization=snapshot.app_utilization,
        rps_fractional=snapshot.rps,
        eps=snapshot.eps,
        in_flight=snapshot.in_flight,
        queue_depth=snapshot.queue_depth,
        lanes=[agent_pb2.LaneLoad(lane=LANES[k], in_flight=n) for k, n in snapshot.lanes.items()],
    )


def version_counters(snapshot: LoadSnapshot) -> list[agent_pb2.VersionCounters]:
    return [
        agent_pb2.VersionCounters(agent_version=version, **vars(tally))
        for version, tally in snapshot.versions.items()
    ]


def observation_to_proto(pool_id: str, observation: Observation) -> agent_pb2.ProviderObservation:
    message = agent_pb2.ProviderObservation(pool_id=pool_id, rate_limited=observation.rate_limited)
    message.observed_at.FromNanoseconds(int(observation.observed_at * 1e9))
    for name in ("limit_requests", "remaining_requests", "limit_tokens", "remaining_tokens"):
        value = observation.known(name)
        if value is not None:
            setattr(message, name, int(value))
    for name in ("reset_requests", "reset_tokens", "retry_after"):
        seconds = observation.known(f"{name}_s")
        if seconds is not None:
            getattr(message, name).CopyFrom(duration_from_seconds(seconds))
    return message
