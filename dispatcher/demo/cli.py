"""``dispatcher demo [--duration N] [--rate R] [--json]``."""

from __future__ import annotations

import asyncio
import json

from rich.live import Live

from dispatcher.demo.run import Demo, run_demo
from dispatcher.demo.view import render
from dispatcher.logs import configure_logging


def demo_main(duration: float, rate: float, as_json: bool) -> int:
    # Errors only: warnings would tear the live view, and the story's failures are on purpose.
    configure_logging("console", "error")
    if as_json:
        demo = asyncio.run(run_demo(duration, rate, None))
        print(json.dumps(demo.summary(), indent=2))
        return 0
    with Live(refresh_per_second=4) as live:

        def tick(demo: Demo) -> None:
            live.update(render(demo))

        demo = asyncio.run(run_demo(duration, rate, tick))
        live.update(render(demo))
    return 0
