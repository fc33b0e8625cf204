"""The sweeper abandons expired leases and stops when told."""

from __future__ import annotations

import asyncio

from dispatcher.ledger.memory import MemoryLedger
from dispatcher.ledger.model import Reservation, ReservationState
from dispatcher.ledger.sweeper import sweep
from tests.ledger.conftest import FakeClock
from tests.ledger.helpers import one, spec


async def test_sweeper_abandons_expired_leases_and_stops() -> None:
    clock = FakeClock()
    ledger = MemoryLedger([spec(tpm=1000)], clock=clock)
    res = await ledger.reserve(one("r", lease=5))
    assert isinstance(res, Reservation)
    clock.advance(6)
    stop = asyncio.Event()
    task = asyncio.create_task(sweep(ledger, stop, interval_s=60))
    for _ in range(100):  # bounded: the first sweep runs on the task's first turn
        if (await ledger.get(res.reservation_id)).state is ReservationState.ABANDONED:
            break
        await asyncio.sleep(0)
    assert (await ledger.get(res.reservation_id)).state is ReservationState.ABANDONED
    stop.set()
    await asyncio.wait_for(task, 5)
