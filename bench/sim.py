"""Discrete-event core of the routing simulator: clusters, heartbeats, replicas, one policy.

Clusters have ``capacity`` worker slots and one local queue (FCFS, or ``short-first`` where
non-long tasks overtake queued long ones). Each cluster sends a heartbeat every ``heartbeat``
seconds (random phase) that reaches every replica 0.1 s later; each arrival lands on a random
replica whose own ``Engine`` decides, and completions are reported to the replica that
dispatched (its settle). ``jsq_bound`` bypasses the engine: argmin of (in-flight + 1) /
capacity with instant, global knowledge.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from random import Random

from bench.sim_workload import CLASS_LANES, LONG, Workload
from dispatcher.config import DispatcherConfig
from dispatcher.routing import Candidate, Engine, EngineSettings, Request

JSQ = "jsq_bound"
DELIVERY_DELAY = 0.1
ROUTE = "chat"

_COMPLETE, _HEARTBEAT, _DELIVER = 0, 1, 2


@dataclass(frozen=True, slots=True)
class SimParams:
    caps: tuple[int, ...]
    replicas: int
    heartbeat: float
    warmup: float
    queue: str  # "fcfs" | "short-first"


@dataclass(slots=True)
class SimResult:
    """Per measured task: completion time (s), queue wait (s) and class."""

    latencies: list[float]
    waits: list[float]
    kinds: list[int]
    decisions: int


def sim_config() -> DispatcherConfig:
    return DispatcherConfig.model_validate(
        {"routes": {ROUTE: {"backends": [{"name": "agents", "weight": 1}]}}}
    )


def make_engines(policy: str, params: SimParams, seed: int) -> list[Engine]:
    config = sim_config()
    settings = EngineSettings(policy=policy, stale_after=3 * params.heartbeat)
    return [
        Engine(config, settings, rng=Random(f"engine-{seed}-{r}")) for r in range(params.replicas)
    ]


def run(policy: str, params: SimParams, work: Workload, seed: int) -> SimResult:
    """Replay ``work`` through ``policy``; returns the measured tasks' numbers.

    One long function on purpose: the event loop runs ~10^6 times per policy and seed, and
    closures over local lists are markedly faster in CPython than attributes of a class.
    """
    caps = params.caps
    n = len(caps)
    ids = [f"c{i}" for i in range(n)]
    index_of = {cid: i for i, cid in enumerate(ids)}
    busy = [0] * n
    in_flight = [0] * n
    lane_load = [[0, 0, 0] for _ in range(n)]
    queues: list[deque[int]] = [deque() for _ in range(n)]
    long_queues: list[deque[int]] = [deque() for _ in range(n)]
    short_first = params.queue == "short-first"

    ntasks = len(work.arrivals)
    arrivals, kinds, durations, replica_of = (
        work.arrivals,
        work.kinds,
        work.durations,
        work.replicas,
    )
    cluster_of = [0] * ntasks
    started = [0.0] * ntasks

    engines = [] if policy == JSQ else make_engines(policy, params, seed)
    requests = [Request(ROUTE, agent="agent", task_class=lane) for lane in CLASS_LANES]
    phase_rng = Random(f"phase-{seed}")
    heap: list[tuple[float, int, int, int]] = []
    seq = 0
    for c in range(n):
        heap.append((phase_rng.random() * params.heartbeat, seq, _HEARTBEAT, c))
        seq += 1
    heapq.heapify(heap)
    for c in range(n):
        _deliver(engines, ids[c], caps[c], 0, (0, 0, 0), 0.0, 0.0)

    end = arrivals[-1] if arrivals else 0.0
    snapshots: dict[int, tuple[int, tuple[int, int, int], float, float]] = {}
    latencies: list[float] = []
    waits: list[float] = []
    measured_kinds: list[int] = []
    warmup = params.warmup
    heappush, heappop = heapq.heappush, heapq.heappop
    decisions = 0

    def start(task: int, c: int, now: float) -> None:
        nonlocal seq
        busy[c] += 1
        started[task] = now
        seq += 1
        heappush(heap, (now + durations[task], seq, _COMPLETE, task))

    def finish(task: int, now: float) -> None:
        c = cluster_of[task]
        kind = kinds[task]
        busy[c] -= 1
        in_flight[c] -= 1
        lane_load[c][kind] -= 1
        if engines:
            engines[replica_of[task]].on_complete(ids[c], CLASS_LANES[kind])
        if arrivals[task] >= warmup:
            latencies.append(now - arrivals[task])
            waits.append(started[task] - arrivals[task])
            measured_kinds.append(kind)
        queue = queues[c] if queues[c] or not short_first else long_queues[c]
        if queue:
            start(queue.popleft(), c, now)

    def handle(until: float) -> None:
        nonlocal seq
        while heap and heap[0][0] <= until:
            now, key, what, arg = heappop(heap)
            if what == _COMPLETE:
                finish(arg, now)
            elif what == _HEARTBEAT:
                if now <= end:
                    seq += 1
                    heappush(heap, (now + params.heartbeat, seq, _HEARTBEAT, arg))
                    lanes = lane_load[arg]
                    seq += 1
                    cpu = busy[arg] / caps[arg]
                    snapshots[seq] = (in_flight[arg], (lanes[0], lanes[1], lanes[2]), now, cpu)
                    heappush(heap, (now + DELIVERY_DELAY, seq, _DELIVER, arg))
            else:
                count, lanes_at, sent_at, cpu = snapshots.pop(key)
                _deliver(engines, ids[arg], caps[arg], count, lanes_at, sent_at, cpu)

    for task in range(ntasks):
        now = arrivals[task]
        handle(now)
        kind = kinds[task]
        if engines:
            engine = engines[replica_of[task]]
            decision = engine.decide(requests[kind], now)
            cid = decision.choices[0].cluster_id
            engine.on_dispatch(cid, CLASS_LANES[kind])
            c = index_of[cid]
        else:
            c = _jsq(in_flight, caps)
        decisions += 1
        cluster_of[task] = c
        in_flight[c] += 1
        lane_load[c][kind] += 1
        if busy[c] < caps[c]:
            start(task, c, now)
        elif short_first and kind == LONG:
            long_queues[c].append(task)
        else:
            queues[c].append(task)
    handle(float("inf"))
    return SimResult(latencies, waits, measured_kinds, decisions)


def _jsq(in_flight: list[int], caps: tuple[int, ...]) -> int:
    best, best_score = 0, float("inf")
    for c, cap in enumerate(caps):
        value = (in_flight[c] + 1) / cap
        if value < best_score:
            best, best_score = c, value
    return best


def _deliver(
    engines: list[Engine],
    cid: str,
    cap: int,
    count: int,
    lanes: tuple[int, int, int],
    sent_at: float,
    cpu: float,
) -> None:
    if not engines:
        return
    candidate = Candidate(
        cid,
        slots=cap,
        in_flight=count,
        lane_in_flight=dict(zip(CLASS_LANES, lanes, strict=True)),
        heartbeat_at=sent_at,
        cpu=cpu,
    )
    for engine in engines:
        engine.update(candidate)
