"""AdminService.Explain: a dry-run Route shown candidate by candidate (nothing is reserved).

Every cluster the engine knows is listed with why it was filtered ("" = eligible), its load
score (lower is better) and whether the real Route would try it first; the decision is what
Route would answer now, without a reservation.
"""

from __future__ import annotations

from dispatcher.fleet.model import Lane
from dispatcher.router import RouteCall, Router
from dispatcher.routing.model import Decision
from dispatcher.rpc import convert, route_convert
from dispatcher.v1 import admin_pb2, common_pb2, routing_pb2

#: Explain needs no idempotency key; a placeholder satisfies the Route validation.
EXPLAIN_REQUEST_ID = "explain"


def explain_call(request: routing_pb2.RouteRequest) -> RouteCall:
    """The request validated as Route would, without insisting on a request id."""
    probe = routing_pb2.RouteRequest()
    probe.CopyFrom(request)
    probe.request_id = probe.request_id or EXPLAIN_REQUEST_ID
    return route_convert.route_call(probe)


def explanation_pb(router: Router, decision: Decision) -> admin_pb2.Explanation:
    chosen = decision.cluster_id
    explanation = admin_pb2.Explanation(backend=decision.backend)
    for cluster_id, reason in sorted(decision.reasons.items()):
        explanation.candidates.append(
            admin_pb2.Candidate(
                cluster=_cluster_ref(router, cluster_id),
                backend=decision.backend,
                agent_version=decision.version,
                filter_reason=reason,
                score=decision.scores.get(cluster_id, 0.0),
                chosen=cluster_id == chosen,
            )
        )
    explanation.decision.CopyFrom(_dry_decision(router, decision))
    return explanation


def _cluster_ref(router: Router, cluster_id: str) -> common_pb2.ClusterRef:
    target = router.engine.targets.get(cluster_id)
    if target is None:
        return common_pb2.ClusterRef(id=cluster_id)
    return common_pb2.ClusterRef(
        id=cluster_id, region=target.candidate.region, endpoint=target.candidate.endpoint
    )


def _dry_decision(router: Router, decision: Decision) -> routing_pb2.RouteDecision:
    pb = routing_pb2.RouteDecision(
        # NO_CANDIDATE has no wire outcome (Route answers RESOURCE_EXHAUSTED): UNSPECIFIED,
        # with the reason saying so.
        outcome=route_convert.OUTCOME_TO_PB.get(
            decision.outcome, routing_pb2.ROUTE_OUTCOME_UNSPECIFIED
        ),
        backend=decision.backend,
        agent_version=decision.version,
        lane=convert.LANE_TO_PB[Lane(decision.lane)],
        reason=decision.reason,
        maintenance_message=decision.message,
        handover_from=decision.handover_from or "",
    )
    if decision.cluster_id is not None:
        pb.cluster.CopyFrom(_cluster_ref(router, decision.cluster_id))
    return pb
