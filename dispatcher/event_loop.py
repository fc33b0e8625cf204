"""The event loop the long-running processes run on: uvloop where it is installed.

grpc.aio, redis-py, SQLAlchemy and the ledger's pipelined Redis connection run on any
asyncio loop. uvloop's (libuv under Cython) does the loop's own work — ready callbacks,
timers, socket reads and writes — in C, and that work is a large share of what
a Route costs beside its handler: every Route wakes the loop for the gRPC call, for its
Redis reply and for the response (DESIGN §10; ``python -m bench.route`` measures it). The
stock loop stays one setting away (``server.event_loop: asyncio``) for platforms without
uvloop wheels and for telling a loop bug from ours.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar, get_args

EventLoopChoice = Literal["auto", "uvloop", "asyncio"]
CHOICES: tuple[EventLoopChoice, ...] = get_args(EventLoopChoice)
T = TypeVar("T")


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def loop_factory(choice: EventLoopChoice = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """A function making a new loop of the chosen kind; ``auto`` is uvloop if installed.
    (The config refuses ``uvloop`` where it is not installed, naming the field.)"""
    if choice == "asyncio" or (choice == "auto" and not uvloop_available()):
        return asyncio.new_event_loop
    import uvloop

    return uvloop.new_event_loop


def default_loop_name() -> str:
    """What ``auto`` picks here."""
    return "uvloop" if uvloop_available() else "asyncio"


def run(main: Coroutine[Any, Any, T], choice: EventLoopChoice = "auto") -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)


def loop_name() -> str:
    """The running loop's implementation, for the startup log: ``uvloop`` or ``asyncio``."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]
