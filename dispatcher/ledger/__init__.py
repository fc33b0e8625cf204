"""The quota ledger: admission against provider limits, and the record of every decision.

Open one with :func:`open_ledger`; the interface is :class:`Ledger`; the domain types live in
:mod:`dispatcher.ledger.model`; journal consumers read through :class:`JournalSource`.
"""

from dispatcher.ledger.factory import open_ledger
from dispatcher.ledger.journal import JournalSource, MemoryJournal
from dispatcher.ledger.model import (
    Candidate,
    Cost,
    Denial,
    FailureMode,
    Mode,
    Observation,
    PoolSnapshot,
    PoolSpec,
    Reservation,
    ReservationState,
    ReserveRequest,
    SettleResult,
    TokenEstimate,
    Usage,
)
from dispatcher.ledger.protocol import Ledger

__all__ = [
    "Candidate",
    "Cost",
    "Denial",
    "FailureMode",
    "JournalSource",
    "Ledger",
    "MemoryJournal",
    "Mode",
    "Observation",
    "PoolSnapshot",
    "PoolSpec",
    "Reservation",
    "ReservationState",
    "ReserveRequest",
    "SettleResult",
    "TokenEstimate",
    "Usage",
    "open_ledger",
]
