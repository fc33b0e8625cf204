"""Simulated agent workers: realistic load on a regional agent's local API, for demos and benches.

    regional-agent simulate-workers --api 127.0.0.1:8787 --rate 5 --duration 60 \
        --failure-rate 0.02 --versions auditor@16.4,auditor@16.5

Tasks arrive as a Poisson process at ``--rate`` per second for ``--duration`` seconds. Each
task's length is heavy-tailed as DESIGN §1 describes: most are light (a "hello", around
0.3 s), some standard (seconds), about 5 % heavy (Pareto, minutes; ``--time-scale`` shrinks
every length for quick runs). A task starts with its lane and version, makes one provider
call every couple of seconds (rate-limit headers in the OpenAI, Azure OpenAI or Anthropic
format its pool implies, an occasional 429), reports each call's token usage (the last one
final, with the outcome and duration) and finishes: ``failure`` with ``--failure-rate``,
else ``success``. Tasks still running when the duration ends finish as ``cancelled``.

Every call goes through the real worker SDK. Each task's plan is drawn when it arrives, in
order, so a ``--seed`` gives the same tasks however the calls interleave.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from regional_agent.sdk import WorkerApiError, WorkerClient

DEFAULT_POOLS = ("azure-openai/eastus2/gpt-4o", "openai/org-x", "anthropic/org-y")
CALL_EVERY_S = 2.0  # a provider call per this much task time
MAX_CALLS = 50
MAX_TASK_S = 900.0
RATE_LIMITED_SHARE = 0.02  # provider calls answered 429


def _light(rng: random.Random) -> float:
    return rng.lognormvariate(math.log(0.3), 0.8)


def _standard(rng: random.Random) -> float:
    return rng.lognormvariate(math.log(4.0), 0.7)


def _heavy(rng: random.Random) -> float:
    return 60.0 * rng.paretovariate(1.5)  # Pareto: a few run far longer than the rest


#: (share, lane, task length in seconds) of the task classes.
_CLASSES: tuple[tuple[float, str, Callable[[random.Random], float]], ...] = (
    (0.80, "light", _light),
    (0.15, "standard", _standard),
    (0.05, "heavy", _heavy),
)


@dataclass(frozen=True)
class Call:
    at_s: float  # offset in the task
    pool_id: str
    input_tokens: int
    output_tokens: int
    rate_limited: bool
    remaining_tokens: int  # what the provider's headers will say is left
    remaining_requests: int


@dataclass(frozen=True)
class TaskPlan:
    task_id: str
    version: str
    lane: str
    length_s: float
    calls: tuple[Call, ...]
    outcome: str


@dataclass
class SimulationSummary:
    tasks_started: int = 0
    tasks_finished: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    usage_reports: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    observations: int = 0
    rate_limited: int = 0
    api_errors: int = 0

    def as_dict(self) -> dict[str, object]:
        return {**vars(self), "outcomes": dict(self.outcomes)}


@dataclass(frozen=True)
class SimulationSettings:
    rate: float = 5.0
    duration_s: float = 60.0
    failure_rate: float = 0.02
    versions: tuple[str, ...] = ("auditor@16.4",)
    pools: tuple[str, ...] = DEFAULT_POOLS
    time_scale: float = 1.0
    seed: int | None = None


def plan_task(rng: random.Random, settings: SimulationSettings) -> TaskPlan:
    pick, lane, length = rng.random(), "heavy", 0.0
    for share, name, sampler in _CLASSES:
        if pick < share:
            lane, length = name, sampler(rng)
            break
        pick -= share
    else:
        length = _CLASSES[-1][2](rng)
    length = min(length, MAX_TASK_S) * settings.time_scale
    n_calls = min(MAX_CALLS, 1 + int(length / (CALL_EVERY_S * settings.time_scale)))
    pool = rng.choice(settings.pools)  # one task talks to one provider deployment
    calls = tuple(
        Call(
            at_s=length * i / n_calls,
            pool_id=pool,
            input_tokens=int(rng.lognormvariate(math.log(800), 0.6)),
            output_tokens=int(rng.lognormvariate(math.log(250), 0.7)),
            rate_limited=(limited := rng.random() < RATE_LIMITED_SHARE),
            remaining_tokens=0 if limited else rng.randint(0, 400_000),
            remaining_requests=rng.randint(0, 2700),
        )
        for i in range(n_calls)
    )
    outcome = "failure" if rng.random() < settings.failure_rate else "success"
    return TaskPlan(uuid.uuid4().hex, rng.choice(settings.versions), lane, length, calls, outcome)


def provider_headers(call: Call) -> dict[str, str]:
    """Rate-limit headers in the format of the pool's provider (its id's first segment)."""
    remaining = call.remaining_tokens
    provider = call.pool_id.partition("/")[0]
    if provider == "anthropic":
        reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 30))
        headers = {
            "anthropic-ratelimit-tokens-limit": "400000",
            "anthropic-ratelimit-tokens-remaining": str(remaining),
            "anthropic-ratelimit-tokens-reset": reset,
        }
        return headers | ({"retry-after": "7"} if call.rate_limited else {})
    headers = {"x-ratelimit-remaining-tokens": str(remaining)}
    if provider == "azure-openai":
        headers["x-ratelimit-remaining-requests"] = str(call.remaining_requests)
        return headers | ({"retry-after-ms": "1500"} if call.rate_limited else {})
    headers |= {"x-ratelimit-limit-tokens": "450000", "x-ratelimit-reset-tokens": "6m0s"}
    return headers | ({"retry-after": "2"} if call.rate_limited else {})


class WorkerSimulation:
    """Runs the plans against one local API; ``summary`` counts what the agent accepted."""

    def __init__(self, client: WorkerClient, settings: SimulationSettings) -> None:
        self.client = client
        self.settings = settings
        self.summary = SimulationSummary()
        self._rng = random.Random(settings.seed)
        self._deadline = 0.0

    async def run(self) -> SimulationSummary:
        loop = asyncio.get_running_loop()
        start = loop.time()
        self._deadline = start + self.settings.duration_s
        tasks: list[asyncio.Task[None]] = []
        next_at = start + self._rng.expovariate(self.settings.rate)
        while next_at < self._deadline:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            tasks.append(asyncio.create_task(self._task(plan_task(self._rng, self.settings))))
            next_at += self._rng.expovariate(self.settings.rate)
        await asyncio.gather(*tasks)
        return self.summary

    async def _task(self, plan: TaskPlan) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        if not await self._call(self.client.report_start, plan.task_id, plan.version, plan.lane):
            return
        self.summary.tasks_started += 1
        outcome = plan.outcome
        for i, call in enumerate(plan.calls):
            if i and began + call.at_s >= self._deadline:
                # The run is over: stop as a worker shutting down would, settling what it used.
                outcome = "cancelled"
                await self._usage(plan, 0, 0, final=True, outcome=outcome)
                break
            await asyncio.sleep(max(0.0, began + call.at_s - loop.time()))
            await self._provider_call(plan, call, last=i == len(plan.calls) - 1)
        else:
            await asyncio.sleep(max(0.0, min(began + plan.length_s, self._deadline) - loop.time()))
        if await self._call(self.client.report_finish, plan.task_id, outcome):
            self.summary.tasks_finished += 1
            self.summary.outcomes[outcome] += 1

    async def _provider_call(self, plan: TaskPlan, call: Call, *, last: bool) -> None:
        status = 429 if call.rate_limited else 200
        headers = provider_headers(call)
        if await self._call(self.client.report_headers, call.pool_id, headers, status):
            self.summary.observations += 1
            self.summary.rate_limited += int(call.rate_limited)
        output = 0 if call.rate_limited else call.output_tokens  # a 429 produced no output
        await self._usage(plan, call.input_tokens, output, final=last, outcome=plan.outcome)

    async def _usage(
        self, plan: TaskPlan, input_tokens: int, output_tokens: int, *, final: bool, outcome: str
    ) -> None:
        def report() -> str:
            return self.client.report_usage(
                f"sim-{plan.task_id}",
                requests=1 if input_tokens else 0,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                final=final,
                outcome=outcome if final else "",
                duration_s=plan.length_s if final else 0.0,
                agent_version=plan.version,
            )

        if await self._call(report):
            self.summary.usage_reports += 1
            self.summary.input_tokens += input_tokens
            self.summary.output_tokens += output_tokens

    async def _call(self, method: Callable[..., object], *args: object) -> bool:
        # The SDK is synchronous (standard library only): keep it off the event loop.
        try:
            await asyncio.to_thread(method, *args)
        except WorkerApiError:
            self.summary.api_errors += 1
            return False
        return True


def comma_list(text: str) -> tuple[str, ...]:
    """``"a, b"`` -> ``("a", "b")``; at least one item (argparse reports the ValueError)."""
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    if not items:
        raise ValueError("at least one value")
    return items


async def simulate(address: str, settings: SimulationSettings) -> SimulationSummary:
    return await WorkerSimulation(WorkerClient(address), settings).run()
