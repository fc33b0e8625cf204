"""Routing engine decisions per second in-process (DESIGN §10), for notes.

    python -m bench.engine_speed [--clusters 10,100,1000] [--seconds 2]

Each decision is followed by ``on_dispatch`` and, one time in two, an ``on_complete``; every
cluster heartbeats once per simulated 5 s (one ``update`` per 20 decisions at 100 clusters).
"""

from __future__ import annotations

import argparse
import time
from random import Random

from bench.sim import ROUTE, sim_config
from dispatcher.routing import Candidate, Engine, EngineSettings, Request
from dispatcher.routing.model import LANES


def measure(clusters: int, seconds: float, policy: str = "p2c") -> float:
    rng = Random(1)
    engine = Engine(sim_config(), EngineSettings(policy=policy), rng=Random(2))
    sizes = [8, 16, 32, 64]
    candidates = [
        Candidate(f"c{i}", slots=sizes[i % 4], in_flight=rng.randrange(8), heartbeat_at=0.0)
        for i in range(clusters)
    ]
    engine.replace(candidates)
    requests = [Request(ROUTE, agent="agent", task_class=lane) for lane in LANES]
    decisions = 0
    now = 0.0
    began = time.perf_counter()
    deadline = began + seconds
    while time.perf_counter() < deadline:
        for _ in range(1000):
            now += 0.001
            decision = engine.decide(requests[decisions % 3], now)
            choice = decision.choices[0]
            engine.on_dispatch(choice.cluster_id, choice.lane)
            if decisions & 1:
                engine.on_complete(choice.cluster_id, choice.lane)
            if decisions % 20 == 0:  # 100 clusters x 1 heartbeat / 5 s at 1,000 decisions/s
                c = candidates[rng.randrange(clusters)]
                engine.update(
                    Candidate(
                        c.cluster_id,
                        slots=c.slots,
                        in_flight=rng.randrange(c.slots),
                        heartbeat_at=now,
                    )
                )
            decisions += 1
    return decisions / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.engine_speed")
    parser.add_argument("--clusters", default="10,100,1000")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--policy", default="p2c")
    ns = parser.parse_args()
    for n in (int(x) for x in ns.clusters.split(",")):
        print(
            f"{ns.policy} clusters={n:5d}: {measure(n, ns.seconds, ns.policy):10,.0f} decisions/s"
        )


if __name__ == "__main__":
    main()
