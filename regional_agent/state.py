"""What the workers beside the agent have told it: running tasks, outcomes, provider headers.

Fed by the local API, read by the agent loop once per report. Counters are cumulative since
this process started (its boot id), as the wire contract asks; rates are per interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dispatcher.errors import InvalidArgument, NotFound
from dispatcher.fleet.model import Lane
from dispatcher.ledger.model import Observation

#: Outcomes a worker may report, and which counter each feeds.
OUTCOMES = ("success", "failure", "timeout", "cancelled", "rate_limited")


@dataclass
class VersionTally:
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    slow: int = 0
    in_flight: int = 0


@dataclass(frozen=True, slots=True)
class _Task:
    version: str
    lane: Lane
    started_at: float


@dataclass
class LoadSnapshot:
    in_flight: int
    queue_depth: int
    app_utilization: float
    rps: float
    eps: float
    lanes: dict[Lane, int]
    versions: dict[str, VersionTally]


@dataclass
class LocalState:
    slots: int
    slow_call_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    versions: dict[str, VersionTally] = field(default_factory=dict)
    observations: list[tuple[str, Observation]] = field(default_factory=list)
    _tasks: dict[str, _Task] = field(default_factory=dict)
    _done: int = 0
    _failed: int = 0
    _window_start: float | None = None

    def start(self, task_id: str, version: str, lane: Lane = Lane.STANDARD) -> None:
        if not task_id or task_id in self._tasks:
            raise InvalidArgument("task_id", "required and not already running")
        if not version:
            raise InvalidArgument("agent_version", "required")
        self._tasks[task_id] = _Task(version, lane, self.clock())
        tally = self.versions.setdefault(version, VersionTally())
        tally.started += 1
        tally.in_flight += 1

    def finish(self, task_id: str, outcome: str, slow: bool | None = None) -> None:
        if outcome not in OUTCOMES:
            raise InvalidArgument("outcome", f"must be one of {', '.join(OUTCOMES)}")
        task = self._tasks.pop(task_id, None)
        if task is None:
            raise NotFound("task", task_id)
        tally = self.versions[task.version]
        tally.in_flight -= 1
        if slow is None:
            slow = self.clock() - task.started_at > self.slow_call_s
        tally.slow += int(slow or outcome == "timeout")
        if outcome == "success":
            tally.succeeded += 1
        elif outcome in ("failure", "timeout"):
            tally.failed += 1
            self._failed += 1
        self._done += 1

    def observe(self, pool_id: str, observation: Observation) -> None:
        self.observations.append((pool_id, observation))

    def take_observations(self) -> list[tuple[str, Observation]]:
        taken, self.observations = self.observations, []
        return taken

    def snapshot(self) -> LoadSnapshot:
        """Load now; rates over the time since the previous snapshot."""
        now = self.clock()
        elapsed = now - self._window_start if self._window_start is not None else 0.0
        rps = self._done / elapsed if elapsed > 0 else 0.0
        eps = self._failed / elapsed if elapsed > 0 else 0.0
        self._window_start, self._done, self._failed = now, 0, 0
        in_flight = len(self._tasks)
        lanes: dict[Lane, int] = {}
        for task in self._tasks.values():
            lanes[task.lane] = lanes.get(task.lane, 0) + 1
        return LoadSnapshot(
            in_flight=in_flight,
            # Workers start tasks as they take them; beyond the slots they wait for one.
            queue_depth=max(0, in_flight - self.slots),
            app_utilization=in_flight / self.slots,
            rps=rps,
            eps=eps,
            lanes=lanes,
            versions={k: VersionTally(**vars(v)) for k, v in self.versions.items()},
        )
