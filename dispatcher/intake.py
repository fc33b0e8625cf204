"""What clusters report on their heartbeat stream, applied to the quota ledger.

Usage reports settle (final) or charge (interim) their reservations; provider observations
reconcile their pools. A report is *durable* once the ledger has applied it, since the ledger
journals every mutation in the same atomic step. A report the ledger can never apply (unknown
reservation) is acknowledged too, with a warning, so it does not sit in an agent's outbox
forever; a report that failed because the hot store is down is not, so the agent resends it.
"""

from __future__ import annotations

from collections.abc import Sequence

from dispatcher.errors import BackendUnavailable, DispatcherError
from dispatcher.fleet.model import UsageReport
from dispatcher.ledger import Ledger, Observation, Usage
from dispatcher.logs import get_logger

log = get_logger(__name__)


async def apply_usage(ledger: Ledger, cluster_id: str, reports: Sequence[UsageReport]) -> list[str]:
    """Apply each report; return the ids that are durable (applied, or never applicable)."""
    durable = []
    for report in reports:
        try:
            await _apply_one(ledger, report)
        except BackendUnavailable as exc:
            log.warning("usage not applied; agent will resend", cluster=cluster_id, reason=str(exc))
            continue
        except DispatcherError as exc:
            log.warning(
                "usage report dropped",
                cluster=cluster_id,
                report_id=report.report_id,
                reservation_id=report.reservation_id,
                reason=str(exc),
            )
        durable.append(report.report_id)
    return durable


async def _apply_one(ledger: Ledger, report: UsageReport) -> None:
    usage = Usage(
        requests=float(report.requests),
        input_tokens=float(report.input_tokens),
        output_tokens=float(report.output_tokens),
    )
    if report.final:
        # Settle takes the task's total: the ledger already holds the interim deltas.
        total = (await ledger.get(report.reservation_id)).usage + usage
        await ledger.settle(report.reservation_id, total, report.outcome or "success")
    else:
        # Redelivery of an interim delta charges it twice; the error is on the safe side
        # (admission gets stricter) and the final settle's total corrects nothing below it.
        await ledger.report_usage(report.reservation_id, usage)


async def apply_observations(
    ledger: Ledger, cluster_id: str, observations: Sequence[tuple[str, Observation]]
) -> None:
    for pool_id, observation in observations:
        try:
            await ledger.reconcile(pool_id, observation)
        except DispatcherError as exc:
            log.warning(
                "observation not applied", cluster=cluster_id, pool=pool_id, reason=str(exc)
            )
