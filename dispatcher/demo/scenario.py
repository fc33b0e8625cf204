"""What the demo runs: its config, its clusters and the script's timeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatcher.config import DispatcherConfig, load_config

ROUTE = "chat-default"
AGENT = "auditor"
FALLBACK = "auditor-basic"
POOL_EAST = "azure-openai/eastus2/gpt-4o"
POOL_WEST = "azure-openai/westeurope/gpt-4o"
POOL_SOUTH = "azure-openai/southindia/gpt-4o"
HEARTBEAT_S = 0.5
ESTIMATE_TOKENS = (800, 400)  # input, max output per task
LOW_TPM = 6_000  # the exhausted pool: about five tasks' worth


@dataclass(frozen=True)
class ClusterPlan:
    cluster_id: str
    region: str
    slots: int
    pool_id: str


CLUSTERS = (
    ClusterPlan("us-east", "eastus2", 16, POOL_EAST),
    ClusterPlan("eu-west", "westeurope", 8, POOL_WEST),
    ClusterPlan("ap-south", "southindia", 4, POOL_SOUTH),
)


@dataclass(frozen=True)
class Timeline:
    """When each scripted event happens, as fractions of the run."""

    exhaust_at: float = 0.15
    restore_at: float = 0.5
    fail_at: float = 0.3
    recover_at: float = 0.45
    restart_at: float = 0.75


def demo_config(workdir: Path) -> DispatcherConfig:
    pool = {"family": "azure-gpt-4o", "tpm": 3_000_000, "rpm": 20_000, "safety_factor": 1.0}
    breaker = {
        "failure_rate": 0.05,
        "window": 40,
        "min_calls": 10,
        "open_for": "1s",
        "max_open_for": "2s",
        "half_open_probes": 2,
    }
    settings: dict[str, Any] = {
        "server.listen": "127.0.0.1:0",
        "server.log_level": "warning",
        "durable.database_url": f"sqlite+aiosqlite:///{workdir / 'ledger.sqlite3'}",
        "routing.heartbeat_interval": f"{HEARTBEAT_S}s",
        "pools": [{"id": p.pool_id, **pool} for p in CLUSTERS],
        "routes": {ROUTE: {"backends": [{"name": "gpt-4o", "weight": 100}]}},
        "agents": {
            AGENT: {
                "breaker": breaker,
                "fallback": FALLBACK,
                "maintenance_message": "The auditor is down for maintenance.",
            },
            FALLBACK: {"breaker": breaker},
        },
    }
    return load_config(None, env={}, overrides=settings)
