"""Journal events: the one record of every ledger mutation.

Hot-store backends append a ``JournalEvent`` in the same atomic step as the mutation it
describes (a Redis stream entry written by the same Lua script; a list append under the
memory backend's lock). The journal consumer copies them into SQL, where ``event_id`` is the
idempotency key: inserting the same event twice is a no-op, so redelivery is harmless.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson


class EventKind(StrEnum):
    """What happened. Values are stored in SQL; never rename one."""

    RESERVED = "reserved"  # quota held for a routed task (state RESERVED)
    DISPATCHED = "dispatched"  # RESERVED -> IN_FLIGHT: the cluster took the task
    EXTENDED = "extended"  # lease prolonged
    USAGE = "usage"  # interim usage of a long task, charged as it happens
    SETTLED = "settled"  # final usage and outcome (state SETTLED)
    RELEASED = "released"  # given back unused (state RELEASED)
    ABANDONED = "abandoned"  # lease expired (state ABANDONED; refunded only if never dispatched)
    RECONCILED = "reconciled"  # a provider observation corrected a pool
    LIMITS_SET = "limits_set"  # an operator changed a pool's limits
    BREAKER = "breaker"  # a circuit breaker changed state
    HANDOVER = "handover"  # a sticky session moved to another cluster


# Looked up rather than called: ``EventKind(value)`` goes through Enum.__call__ and __new__,
# a sixth of from_fields on the consumer's path.
_KINDS: dict[str, EventKind] = {kind.value: kind for kind in EventKind}


@dataclass(frozen=True, slots=True)
class JournalEvent:
    """One journalled mutation.

    ``event_id`` is unique across the whole deployment (backends derive it from their own
    sequence, e.g. ``<journal stream>/<entry id>``); ``at`` is the hot store's clock in unix
    seconds; ``data`` holds kind-specific, JSON-serialisable detail (costs, usage, outcome...).
    """

    event_id: str
    kind: EventKind
    at: float
    reservation_id: str | None = None
    pool_ids: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_fields(self) -> dict[str, str]:
        """Flat string fields, as stored in a Redis stream entry (without ``event_id``)."""
        return {
            "kind": self.kind.value,
            "at": repr(self.at),
            "rid": self.reservation_id or "",
            "pools": ",".join(self.pool_ids),
            "data": json.dumps(self.data, separators=(",", ":"), sort_keys=True),
        }

    @classmethod
    def from_fields(cls, event_id: str, fields: Mapping[str, str]) -> JournalEvent:
        """Inverse of :meth:`to_fields`; raises ``ValueError`` on a malformed entry."""
        pools = fields.get("pools", "")
        kind = _KINDS.get(fields["kind"])
        if kind is None:
            raise ValueError(f"{fields['kind']!r} is not a journal event kind")
        return cls(
            event_id=event_id,
            kind=kind,
            at=float(fields["at"]),
            reservation_id=fields.get("rid") or None,
            pool_ids=tuple(pools.split(",")) if pools else (),
            data=orjson.loads(fields.get("data") or "{}"),  # the consumer's hot path
        )
