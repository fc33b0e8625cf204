"""The lease sweeper: abandons expired reservations so nothing leaks (DESIGN §7.2).

Every replica may run one; the sweep itself is atomic in the store, so two replicas sweeping
at once abandon each lease once. A hot-store outage is logged and the loop carries on.
"""

from __future__ import annotations

import asyncio
import contextlib

from dispatcher.errors import BackendUnavailable
from dispatcher.ledger.protocol import Ledger
from dispatcher.logs import get_logger

log = get_logger(__name__)


async def sweep(ledger: Ledger, stop: asyncio.Event, *, interval_s: float = 1.0) -> None:
    """Call ``expire_due`` now and then every ``interval_s`` until ``stop`` is set."""
    while not stop.is_set():
        try:
            abandoned = await ledger.expire_due()
        except BackendUnavailable as exc:
            log.warning("lease sweep failed", reason=str(exc))
        else:
            if abandoned:
                log.info("leases abandoned", count=len(abandoned))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
