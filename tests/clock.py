"""A clock tests move by hand, for code that takes ``clock: Callable[[], float]``."""

from __future__ import annotations

#: A whole minute, so fixed-window tests know where the boundaries are.
T0 = 1_700_000_040.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
