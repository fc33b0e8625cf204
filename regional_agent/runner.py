"""``regional-agent run``: the local API, the outbox and the dispatcher stream, together.

    await run_agent(load_agent_config("agent.yaml"), stop_event)

SIGTERM / SIGINT set ``stop``: the loop reports DRAIN and closes its stream, then the local
API stops taking calls and the outbox is closed (rows not yet acked stay for the next start).
"""

from __future__ import annotations

import asyncio
import signal

from dispatcher.config.values import split_host_port
from dispatcher.logs import get_logger
from regional_agent.collectors import HostCollector
from regional_agent.config import AgentConfig
from regional_agent.local_api import LocalApi
from regional_agent.loop import AgentLoop
from regional_agent.outbox import Outbox
from regional_agent.state import LocalState

log = get_logger(__name__)


async def run_agent(config: AgentConfig, stop: asyncio.Event) -> None:
    outbox = Outbox(config.outbox)
    state = LocalState(slots=config.slots, slow_call_s=config.slow_call)
    api = LocalApi(state, outbox)
    try:
        await api.start(*split_host_port(config.local_api))
        log.info("local_api_listening", port=api.port, pending_usage=outbox.count())
        loop = AgentLoop(config, state, outbox, HostCollector())
        await loop.run(stop)
    finally:
        await api.aclose()
        outbox.close()


async def serve_until_signalled(config: AgentConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_agent(config, stop)
