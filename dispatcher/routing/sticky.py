"""Sticky sessions: keep the pin, hand it over, or place anew (DESIGN §6.5). Pure.

The session table lives in the hot store; this only decides. A pin is kept while its cluster
is eligible for the request (not draining, in maintenance, ejected, or otherwise filtered)
and still runs the boot it was pinned on. A stale heartbeat alone does not move a session:
staleness says the reports are late, not that the cluster is down (ejection says that).
Otherwise the session is handed over to the rendezvous choice with bounded load and the
caller stores the new pin (with the new boot id), so one reboot causes exactly one handover.
Sessions do not move back when the old cluster recovers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from dispatcher.routing.policies.rendezvous import rendezvous_order
from dispatcher.routing.target import Target


class StickyAction(StrEnum):
    KEEP = "keep"
    HANDOVER = "handover"
    PLACE = "place"


@dataclass(frozen=True, slots=True)
class Pin:
    """What the session table holds for a session key."""

    cluster_id: str
    boot_id: str = ""
    backend: str = ""


@dataclass(frozen=True, slots=True)
class StickyDecision:
    action: StickyAction
    order: tuple[Target, ...]
    handover_from: str | None = None
    reason: str = ""

    @property
    def cluster_id(self) -> str | None:
        return self.order[0].cluster_id if self.order else None

    def pin(self, backend: str = "") -> Pin | None:
        """The pin to store after this decision (None: nothing to route to)."""
        if not self.order:
            return None
        first = self.order[0]
        return Pin(first.cluster_id, first.candidate.boot_id, backend)


def handover_reason(pin: Pin, eligible: Mapping[str, Target]) -> str | None:
    """Why the pinned cluster can no longer hold the session, or None to keep it."""
    target = eligible.get(pin.cluster_id)
    if target is None:
        return "pinned_unavailable"
    if pin.boot_id and target.candidate.boot_id != pin.boot_id:
        return "boot_id_changed"
    return None


def decide_sticky(
    session_key: str,
    pin: Pin | None,
    eligible: list[Target],
    bound: float = 1.25,
) -> StickyDecision:
    """Keep, hand over or place. ``eligible``: the targets that passed the filters."""
    by_id = {t.cluster_id: t for t in eligible}
    if pin is not None:
        why = handover_reason(pin, by_id)
        if why is None:
            kept = by_id[pin.cluster_id]
            rest = [t for t in rendezvous_order(session_key, eligible, bound) if t is not kept]
            return StickyDecision(StickyAction.KEEP, (kept, *rest))
        order = list(rendezvous_order(session_key, eligible, bound))
        # A reboot keeps the cluster eligible; the session still moves, so skip it first.
        if why == "boot_id_changed":
            order.sort(key=lambda t: t.cluster_id == pin.cluster_id)
        return StickyDecision(StickyAction.HANDOVER, tuple(order), pin.cluster_id, why)
    order = rendezvous_order(session_key, eligible, bound)
    return StickyDecision(StickyAction.PLACE, tuple(order), None, "new_session")
