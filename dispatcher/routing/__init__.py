"""The pure routing engine (DESIGN §6): no I/O, everything a policy needs is on the candidate.

Modules: ``model`` (Candidate, Request, Decision), ``engine`` (the facade), ``policies/``
(one module per policy), ``lanes``, ``load`` (local in-flight accounting), ``split`` (weighted
backend split), ``filters``, ``breaker``, ``outlier``, ``sticky``, ``capacity``.
"""

from __future__ import annotations

from dispatcher.routing.engine import Engine, EngineSettings
from dispatcher.routing.model import (
    HEAVY,
    LIGHT,
    STANDARD,
    Candidate,
    Choice,
    Decision,
    Outcome,
    Reason,
    Request,
    lane_for,
)

__all__ = [
    "HEAVY",
    "LIGHT",
    "STANDARD",
    "Candidate",
    "Choice",
    "Decision",
    "Engine",
    "EngineSettings",
    "Outcome",
    "Reason",
    "Request",
    "lane_for",
]
