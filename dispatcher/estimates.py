"""Token estimates for Route calls that carry none, learned per agent from settled usage.

Admission must reserve before the task runs; a caller that cannot say how many tokens its
task will use gets the 90th percentile of what that agent's recent tasks actually used
(input and output separately), or the agent's configured default until there is history.
A high percentile errs on the safe side: under-reserving is what over-admits a pool.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from dispatcher.ledger import TokenEstimate, Usage

WINDOW = 200
MIN_SAMPLES = 20
PERCENTILE = 0.9


def _percentile(values: deque[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class EstimateBook:
    """Recent usage per agent; ``estimate`` answers from it once it has enough samples."""

    def __init__(self, default_for: Callable[[str], TokenEstimate]) -> None:
        self._default_for = default_for
        self._inputs: dict[str, deque[float]] = {}
        self._outputs: dict[str, deque[float]] = {}

    def learn(self, agent: str, usage: Usage) -> None:
        self._inputs.setdefault(agent, deque(maxlen=WINDOW)).append(usage.input_tokens)
        self._outputs.setdefault(agent, deque(maxlen=WINDOW)).append(usage.output_tokens)

    def estimate(self, agent: str) -> TokenEstimate:
        inputs = self._inputs.get(agent)
        if inputs is None or len(inputs) < MIN_SAMPLES:
            return self._default_for(agent)
        return TokenEstimate(
            _percentile(inputs, PERCENTILE), _percentile(self._outputs[agent], PERCENTILE)
        )
