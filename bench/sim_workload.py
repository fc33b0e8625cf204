"""The simulated task stream: Poisson arrivals of three lognormal task classes.

One stream per seed, replayed unchanged for every policy so policies are compared on the same
tasks. ``rate = load x total slots / mean service time`` puts the fleet at ``load`` utilisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from random import Random

HELLO, STANDARD_TASK, LONG = 0, 1, 2
CLASS_NAMES = ("hello", "standard", "long")
#: The routing lane each class travels with (the dispatcher is told the task class).
CLASS_LANES = ("light", "standard", "heavy")


@dataclass(frozen=True, slots=True)
class TaskClass:
    name: str
    share: float
    median: float
    sigma: float

    @property
    def mean(self) -> float:
        return self.median * math.exp(self.sigma**2 / 2)


CLASSES = (
    TaskClass("hello", 0.20, 0.05, 0.5),
    TaskClass("standard", 0.75, 6.0, 0.6),
    TaskClass("long", 0.05, 400.0, 0.35),  # the PDF audits
)


def mean_service(classes: tuple[TaskClass, ...] = CLASSES) -> float:
    return sum(c.share * c.mean for c in classes)


@dataclass(frozen=True, slots=True)
class Workload:
    """Parallel lists, one entry per task, in arrival order."""

    arrivals: list[float]
    kinds: list[int]
    durations: list[float]
    replicas: list[int]
    rate: float


def generate(seed: int, total_slots: int, load: float, seconds: float, replicas: int) -> Workload:
    rng = Random(f"workload-{seed}")
    rate = load * total_slots / mean_service()
    cut_hello = CLASSES[0].share
    cut_standard = cut_hello + CLASSES[1].share
    arrivals: list[float] = []
    kinds: list[int] = []
    durations: list[float] = []
    picks: list[int] = []
    now = 0.0
    while True:
        now += rng.expovariate(rate)
        if now >= seconds:
            break
        u = rng.random()
        kind = HELLO if u < cut_hello else STANDARD_TASK if u < cut_standard else LONG
        spec = CLASSES[kind]
        arrivals.append(now)
        kinds.append(kind)
        durations.append(spec.median * math.exp(spec.sigma * rng.gauss(0.0, 1.0)))
        picks.append(rng.randrange(replicas))
    return Workload(arrivals, kinds, durations, picks, rate)
