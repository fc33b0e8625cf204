"""Redis key layout and the JSON records the Lua scripts exchange with Python.

Key layout (``{family}`` is the Redis Cluster hash tag, so one family lives in one slot)::

    dsp:{family}:pool:<pool_id>          hash: limits, levels, holds, block, last observation
    dsp:{family}:res:<reservation_id>    string: reservation record (JSON); TTL 1 day once closed
    dsp:{family}:leases                  sorted set: reservation id by lease deadline
    dsp:{family}:journal                 stream: one entry per mutation (JournalEvent fields)
    dsp:journal:streams                  set of every journal stream, for consumers to find
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dispatcher.ledger import bucket
from dispatcher.ledger.events import JournalEvent
from dispatcher.ledger.model import (
    DIMENSIONS,
    NO_USAGE,
    Cost,
    Denial,
    PoolSpec,
    Reservation,
    ReservationState,
    Usage,
)

#: A record's state by its text: a dict lookup, where ``ReservationState(text)`` goes
#: through Enum's metaclass call (every Route and Release decodes a record).
_STATE_OF = {state.value: state for state in ReservationState}


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str = "dsp"

    def pool(self, family: str, pool_id: str) -> str:
        return f"{self.prefix}:{{{family}}}:pool:{pool_id}"

    def res(self, family: str, reservation_id: str) -> str:
        return f"{self.prefix}:{{{family}}}:res:{reservation_id}"

    def leases(self, family: str) -> str:
        return f"{self.prefix}:{{{family}}}:leases"

    def journal(self, family: str) -> str:
        return f"{self.prefix}:{{{family}}}:journal"

    @property
    def streams(self) -> str:
        return f"{self.prefix}:journal:streams"


def family_of_stream(stream_key: str) -> str:
    """The family of a journal stream key (the part inside the hash tag)."""
    return stream_key[stream_key.index("{") + 1 : stream_key.rindex("}")]


def event_from_entry(family: str, entry_id: str, fields: Mapping[str, str]) -> JournalEvent:
    """A journal stream entry as a :class:`JournalEvent` (event id ``<family>/<entry id>``)."""
    return JournalEvent.from_fields(f"{family}/{entry_id}", fields)


def reservation_from_record(rec: Mapping[str, Any], replayed: bool = False) -> Reservation:
    return Reservation(
        reservation_id=rec["rid"],
        request_id=rec["req"],
        candidate_index=int(rec["ci"]),
        candidate_id=rec["cid"],
        pool_ids=tuple(rec["pools"]),
        cost={p: Cost.from_dict(c) for p, c in rec["cost"].items()},
        state=_STATE_OF[rec["state"]],
        lease_expires_at=float(rec["exp"]),
        created_at=float(rec["at"]),
        spilled_from=rec.get("spill"),
        usage=usage_of(rec["usage"]),
        replayed=replayed,
    )


def usage_of(raw: Mapping[str, float]) -> Usage:
    """A record's usage; one that reported nothing yet (every reservation until it runs) is
    the shared ``NO_USAGE`` rather than a new, re-validated copy of it."""
    if not any(raw.values()):
        return NO_USAGE
    return Usage.from_dict(raw)


def replayable(out: Mapping[str, Any]) -> Reservation:
    """A script's ``{ok = record}`` or ``{replay = record}`` (an idempotent repeat)."""
    return reservation_from_record(out.get("ok") or out["replay"], replayed="replay" in out)


def decision(item: Mapping[str, Any]) -> Reservation | Denial:
    if "deny" in item:
        deny = item["deny"]
        retry = deny.get("retry")
        retry = None if retry is None else float(retry)
        return Denial(retry, dict(deny["reasons"]), bool(deny["never"]))
    return replayable(item)


def pool_state(spec: PoolSpec, raw: Mapping[bytes, bytes]) -> bucket.PoolState:
    """A pool hash read back into the in-memory model (snapshots reuse bucket.snapshot)."""
    h = {k.decode(): float(v) for k, v in raw.items() if k not in (b"mode", b"refund")}
    pool = bucket.PoolState(spec, {}, h.get("blocked", 0.0), h.get("obs_at", float("-inf")))
    for dim in DIMENSIONS:
        if f"{dim}.lim" in h:
            pool.dims[dim] = bucket.DimState(
                h[f"{dim}.lim"], h[f"{dim}.lvl"], h[f"{dim}.t"], h.get(f"{dim}.obs"),
                h.get(f"{dim}.held", 0.0),
            )  # fmt: skip
    return pool
