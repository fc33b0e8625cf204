"""Routing simulator: the real engine and policies on a virtual clock (DESIGN §8, §10).

    python -m bench.simulate --caps 64,32,16,8 --load 0.9 --replicas 4 --heartbeat 5 \\
        --hours 10 --seeds 1,2,3 [--json] [--plot FILE.png] [--queue fcfs|short-first]

Per policy: p50 / p99 / p99.9 completion time, the p99 of non-long ("interactive") tasks,
queue-wait p99 and the share of tasks that waited over 60 s, averaged over the seeds, beside
the perfect-information join-shortest-queue bound. Seeds x policies run in parallel processes.
Numbers are for notes, not asserts (DESIGN §4).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from bench.sim import JSQ, SimParams, run
from bench.sim_report import average, plot, summarise, table
from bench.sim_workload import generate
from dispatcher.routing.policies import DEFAULT_POLICY

BASELINES = ("round_robin", "weighted_round_robin", "least_outstanding")
WARMUP = 1800.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.simulate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--caps", default="64,32,16,8", help="slots per cluster, comma separated")
    parser.add_argument(
        "--load", type=float, default=0.9, help="offered load, fraction of all slots"
    )
    parser.add_argument("--replicas", type=int, default=4, help="dispatcher replicas")
    parser.add_argument("--heartbeat", type=float, default=5.0, help="heartbeat interval, s")
    parser.add_argument("--hours", type=float, default=10.0, help="simulated hours incl. warm-up")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--policies", default=",".join((*BASELINES, DEFAULT_POLICY, JSQ)))
    parser.add_argument("--queue", choices=("fcfs", "short-first"), default="fcfs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--plot", metavar="FILE", help="bar chart of the results (needs matplotlib)"
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    return parser.parse_args(argv)


def _job(args: tuple[str, SimParams, int, float, float]) -> tuple[str, int, dict[str, float]]:
    policy, params, seed, load, seconds = args
    work = generate(seed, sum(params.caps), load, seconds, params.replicas)
    result = run(policy, params, work, seed)
    return policy, seed, summarise(result)


def simulate(ns: argparse.Namespace) -> dict[str, object]:
    caps = tuple(int(c) for c in ns.caps.split(","))
    seeds = [int(s) for s in ns.seeds.split(",")]
    policies = [p for p in ns.policies.split(",") if p]
    seconds = ns.hours * 3600.0
    warmup = min(WARMUP, seconds / 2)  # short runs (tests) still measure something
    params = SimParams(caps, ns.replicas, ns.heartbeat, warmup, ns.queue)
    jobs = [(p, params, s, ns.load, seconds) for s in seeds for p in policies]
    per_seed: dict[str, list[dict[str, float]]] = {p: [] for p in policies}
    if ns.jobs > 1:
        with ProcessPoolExecutor(ns.jobs) as pool:
            results = list(pool.map(_job, jobs))
    else:
        results = [_job(job) for job in jobs]
    for policy, _seed, summary in results:
        per_seed[policy].append(summary)
    averaged = {p: average(rows) for p, rows in per_seed.items()}
    return {
        "default_policy": DEFAULT_POLICY,
        "policies": averaged,
        "ratios": _ratios(averaged),
        "setup": {
            "caps": list(caps),
            "load": ns.load,
            "replicas": ns.replicas,
            "heartbeat_s": ns.heartbeat,
            "hours": ns.hours,
            "seeds": seeds,
            "queue": ns.queue,
        },
    }


def _ratios(averaged: dict[str, dict[str, float]]) -> dict[str, float]:
    key = "interactive_p99_s"
    out: dict[str, float] = {}
    default = averaged.get(DEFAULT_POLICY, {}).get(key)
    jsq = averaged.get(JSQ, {}).get(key)
    wrr = averaged.get("weighted_round_robin", {}).get(key)
    if default and jsq:
        out["default_vs_jsq"] = default / jsq
    if default and wrr:
        out["wrr_vs_default"] = wrr / default
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(argv)
    began = time.perf_counter()
    report = simulate(ns)
    report["wall_s"] = round(time.perf_counter() - began, 1)
    if ns.json:
        print(json.dumps(report, indent=2, sort_keys=False))
    else:
        print(table(report))
    if ns.plot:
        problem = plot(report, ns.plot)
        if problem:
            print(problem, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
