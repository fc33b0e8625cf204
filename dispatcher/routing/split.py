"""Weighted backend split: smooth weighted round-robin, nginx style (DESIGN §6.1).

Each pick adds every live backend's weight to its running value, takes the largest and
subtracts the live total from it. Over any window of ``sum(weights)`` picks each backend gets
exactly its weight, interleaved (90/10 gives Ax9, Bx1 spread out, not in a block), with no
randomness. Tripped backends are skipped and the total shrinks to the live ones, which
renormalises their shares; a tripped backend's running value is left alone so it rejoins
where it stood.

Usage::

    split = SmoothWeighted([("llama3-local", 90), ("gpt-4o", 10)])
    split.pick()                      # "llama3-local"
    split.pick(tripped={"gpt-4o"})    # always "llama3-local"
"""

from __future__ import annotations

from collections.abc import Collection, Iterable


class SmoothWeighted:
    """Deterministic weighted picks over named items; zero-weight items are never picked."""

    __slots__ = ("_current", "_names", "_weights")

    def __init__(self, weights: Iterable[tuple[str, float]]) -> None:
        pairs = [(name, float(weight)) for name, weight in weights if weight > 0]
        self._names = [name for name, _ in pairs]
        self._weights = [weight for _, weight in pairs]
        self._current = [0.0] * len(pairs)

    def copy(self) -> SmoothWeighted:
        """An independent copy: picks on it leave this split's sequence as it was."""
        twin = SmoothWeighted(())
        twin._names, twin._weights = self._names, self._weights
        twin._current = list(self._current)
        return twin

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def pick(self, tripped: Collection[str] = ()) -> str | None:
        """The next item, or None when every item is tripped."""
        current, weights = self._current, self._weights
        best = -1
        total = 0.0
        for index, name in enumerate(self._names):
            if tripped and name in tripped:
                continue
            current[index] += weights[index]
            total += weights[index]
            if best < 0 or current[index] > current[best]:
                best = index
        if best < 0:
            return None
        current[best] -= total
        return self._names[best]
