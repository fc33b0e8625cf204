"""How journal events become ``reservations`` rows: one rule, applied in two halves.

1. ``summarise`` folds one batch's *new* events of a reservation in Python, as if no row
   existed (only newly inserted events are folded: the insert is the idempotency check).
2. ``merge_clause`` merges that summary into the stored row inside the upsert's
   ``ON CONFLICT DO UPDATE``, so the database does it atomically against the latest committed
   row: concurrent consumers need no explicit locks and cannot lose each other's updates.

Events of one reservation are journalled in order on one stream, but a consumer that takes
over a dead consumer's entries (XAUTOCLAIM) can commit an older event after a newer one. So
the rule never moves a reservation backwards: a state replaces only one of lower or equal
rank, fields are filled rather than overwritten, and the time span only widens.

Fields read from ``JournalEvent.data`` (conventions in ``dispatcher.ledger.journal``; all
optional here, other keys stay in the journal only): ``request_id``, ``candidate_id`` and
``cost`` (pool id -> cost) of ``reserved``; ``usage`` (a running total) of ``usage`` and
``settled``; ``outcome`` of ``settled``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, case, func, or_
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from dispatcher.ledger.events import EventKind, JournalEvent

# Only interim events seen so far: the reserving event is still with another consumer.
UNKNOWN = "unknown"
RESERVED = "reserved"
IN_FLIGHT = "in_flight"
SETTLED = "settled"
RELEASED = "released"
ABANDONED = "abandoned"

_STATE_OF = {
    EventKind.RESERVED: RESERVED,
    EventKind.DISPATCHED: IN_FLIGHT,
    EventKind.SETTLED: SETTLED,
    EventKind.RELEASED: RELEASED,
    EventKind.ABANDONED: ABANDONED,
}
# A late settle after expiry is accepted by the hot store (DESIGN §7.2), so SETTLED outranks
# the other terminal states.
RANK = {UNKNOWN: -1, RESERVED: 0, IN_FLIGHT: 1, RELEASED: 2, ABANDONED: 2, SETTLED: 3}
TERMINAL = (SETTLED, RELEASED, ABANDONED)

# Kinds that change a reservation row; the rest (reconcile, breaker, handover...) are
# journal-only even when they carry a reservation id.
RESERVATION_KINDS = frozenset({*_STATE_OF, EventKind.EXTENDED, EventKind.USAGE})


@dataclass(frozen=True, slots=True)
class Reservation:
    """One row of ``reservations``; ``None`` for what no event has told yet."""

    id: str
    state: str
    created_at: datetime
    updated_at: datetime
    request_id: str | None = None
    candidate_id: str | None = None
    pool_ids: tuple[str, ...] = ()
    reserved: Mapping[str, Any] | None = None
    usage: Mapping[str, Any] | None = None
    outcome: str | None = None


def event_time(event: JournalEvent) -> datetime:
    return datetime.fromtimestamp(event.at, tz=UTC)


def event_values(e: JournalEvent) -> dict[str, Any]:
    """The ``journal_events`` row of ``e``, by column."""
    return {
        "event_id": e.event_id,
        "kind": e.kind.value,
        "at": event_time(e),
        "reservation_id": e.reservation_id,
        "pool_ids": ",".join(e.pool_ids),
        "data": dict(e.data),
    }


def reservation_values(r: Reservation) -> dict[str, Any]:
    """The ``reservations`` row of a summary, by column."""
    return {
        "id": r.id,
        "state": r.state,
        "request_id": r.request_id,
        "candidate_id": r.candidate_id,
        "pool_ids": ",".join(r.pool_ids),
        "reserved": None if r.reserved is None else dict(r.reserved),
        "usage": None if r.usage is None else dict(r.usage),
        "outcome": r.outcome,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
    }


def summarise(reservation_id: str, events: Iterable[JournalEvent]) -> Reservation:
    """Fold ``events`` (all of ``reservation_id``, any order) as if no row existed."""
    ordered = sorted(events, key=lambda e: e.at)
    first, last = event_time(ordered[0]), event_time(ordered[-1])
    state, outcome = UNKNOWN, None
    request_id = candidate_id = None
    pools: tuple[str, ...] = ()
    reserved: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    for event in ordered:
        data = event.data
        request_id = request_id or _text(data.get("request_id"))
        candidate_id = candidate_id or _text(data.get("candidate_id"))
        pools = pools or event.pool_ids
        reserved = reserved or _mapping(data.get("cost"))
        new_state = _STATE_OF.get(event.kind)
        if new_state is not None and RANK[new_state] >= RANK[state]:
            state, outcome = new_state, _text(data.get("outcome")) or outcome
        # Usage is a running total; the settle's is final, so a late interim report must not
        # replace it.
        settles = event.kind is EventKind.SETTLED
        interim = event.kind is EventKind.USAGE and state not in TERMINAL
        if "usage" in data and (settles or interim):
            usage = _mapping(data["usage"])
    return Reservation(
        reservation_id,
        state,
        first,
        last,
        request_id,
        candidate_id,
        pools,
        reserved,
        usage,
        outcome,
    )


def merge_clause(
    table: Table, new: ReadOnlyColumnCollection[str, Any]
) -> dict[str, ColumnElement[Any]]:
    """``SET`` of the upsert: the stored row (``table``) merged with a summary (``new``)."""
    old = table.c
    new_wins = _rank(new.state) >= _rank(old.state)
    # OR of equalities, not IN: an IN list is an expanding parameter, which an
    # executemany (how SQLite runs the upsert) cannot carry.
    terminal = or_(*(old.state == state for state in TERMINAL))
    keep_final_usage = and_(terminal, new.state != SETTLED)
    return {
        "state": case((new_wins, new.state), else_=old.state),
        "outcome": case((new_wins, func.coalesce(new.outcome, old.outcome)), else_=old.outcome),
        "request_id": func.coalesce(old.request_id, new.request_id),
        "candidate_id": func.coalesce(old.candidate_id, new.candidate_id),
        "pool_ids": case((old.pool_ids == "", new.pool_ids), else_=old.pool_ids),
        "reserved": func.coalesce(old.reserved, new.reserved),
        "usage": case(
            (new.usage.is_(None), old.usage), (keep_final_usage, old.usage), else_=new.usage
        ),
        "created_at": case((new.created_at < old.created_at, new.created_at), else_=old.created_at),
        "updated_at": case((new.updated_at > old.updated_at, new.updated_at), else_=old.updated_at),
    }


def _rank(state: ColumnElement[Any]) -> ColumnElement[int]:
    return case(RANK, value=state, else_=-1)


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _mapping(value: object) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) and value else None
