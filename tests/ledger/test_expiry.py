"""``expiry``: one timer for many deadlines, and failing the overdue (pure asyncio)."""

from __future__ import annotations

import asyncio
from typing import Any

from dispatcher.ledger.expiry import DeadlineTimer, fail_overdue


def test_the_timer_fires_by_the_earliest_deadline_it_was_given() -> None:
    async def main() -> list[str]:
        loop, fired = asyncio.get_running_loop(), asyncio.Event()
        timer = DeadlineTimer(fired.set)
        timer.arm(loop, loop.time() + 600.0)
        timer.arm(loop, loop.time() + 0.01)  # sooner: replaces the first
        timer.arm(loop, loop.time() + 300.0)  # later: the sooner one stands
        await asyncio.wait_for(fired.wait(), 60.0)
        return ["fired"]

    assert asyncio.run(main()) == ["fired"]


def test_a_timer_armed_on_a_loop_that_closed_is_armed_anew_on_the_next() -> None:
    """Armed on a loop that closed before it fired, it must not stand in for a timer on
    the next loop, even for a later deadline."""
    fired = asyncio.Event()
    timer = DeadlineTimer(lambda: fired.set())

    async def arm_and_leave() -> None:
        loop = asyncio.get_running_loop()
        timer.arm(loop, loop.time() + 0.2)  # this loop closes long before it

    async def arm_later() -> None:
        loop = asyncio.get_running_loop()
        timer.arm(loop, loop.time() + 0.3)
        await asyncio.wait_for(fired.wait(), 60.0)

    asyncio.run(arm_and_leave())
    asyncio.run(arm_later())
    assert fired.is_set()


async def test_overdue_futures_fail_and_the_earliest_deadline_ahead_is_returned() -> None:
    loop = asyncio.get_running_loop()
    late, due, ahead, later, unlimited, done = (loop.create_future() for _ in range(6))
    done.set_result("answered")
    waiting: list[tuple[float | None, asyncio.Future[Any]]] = [
        (5.0, late), (10.0, due), (15.0, ahead), (20.0, later), (None, unlimited), (1.0, done),
    ]  # fmt: skip
    assert fail_overdue(waiting, now=10.0) == (True, 15.0)
    for future in (late, due):
        assert isinstance(future.exception(), TimeoutError)
    assert not any(f.done() for f in (ahead, later, unlimited))
    assert done.result() == "answered"
    assert fail_overdue([(15.0, ahead), (None, unlimited)], now=12.0) == (False, 15.0)
