"""One loop timer for many deadlines: fired by the earliest, it fails whoever is overdue.

A timer made and closed per call (uvloop's are libuv handles) cost the Route path about a
twentieth of its time; the batcher's queue and each pipelined Redis connection keep one
``DeadlineTimer`` for all their waiting callers instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any


class DeadlineTimer:
    """Calls ``on_due`` by the earliest deadline (a loop time) ``arm`` was given since it
    last fired; ``on_due`` re-arms for whatever is still waiting."""

    def __init__(self, on_due: Callable[[], None]) -> None:
        self._on_due = on_due
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        handle = self._handle
        if handle is not None and self._loop is loop:  # (one armed on a closed loop: anew)
            if handle.when() <= deadline:
                return
            handle.cancel()  # a caller with less time left than those before it
        self._loop = loop
        self._handle = loop.call_at(deadline, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        self._on_due()


def fail_overdue(
    waiting: Iterable[tuple[float | None, asyncio.Future[Any]]], now: float
) -> tuple[bool, float | None]:
    """Fail with TimeoutError each pending future whose deadline is at or before ``now``:
    (whether any was, the earliest deadline still ahead)."""
    failed, earliest = False, None
    for deadline, future in waiting:
        if deadline is None or future.done():
            continue
        if deadline <= now:
            future.set_exception(TimeoutError())
            failed = True
        elif earliest is None or deadline < earliest:
            earliest = deadline
    return failed, earliest
