"""Builders shared by the routing tests."""

from __future__ import annotations

from random import Random
from typing import Any

from dispatcher.config import DispatcherConfig
from dispatcher.routing import Candidate, Engine, EngineSettings, Request

ROUTE = "chat"


def config(**agents: Any) -> DispatcherConfig:
    """One route ``chat`` over backends llama (90) and gpt (10), plus ``agents`` sections."""
    return DispatcherConfig.model_validate(
        {
            "routes": {
                ROUTE: {
                    "backends": [{"name": "llama", "weight": 90}, {"name": "gpt", "weight": 10}]
                }
            },
            "agents": agents,
        }
    )


def engine(*candidates: Candidate, seed: int = 1, **settings: Any) -> Engine:
    built = Engine(config(), EngineSettings(**settings), rng=Random(seed))
    built.replace(candidates)
    return built


def request(lane: str = "standard", **fields: Any) -> Request:
    return Request(ROUTE, agent=fields.pop("agent", "auditor"), task_class=lane, **fields)


def cluster(cid: str, slots: int = 10, **fields: Any) -> Candidate:
    fields.setdefault("heartbeat_at", 0.0)
    return Candidate(cid, slots=slots, **fields)
