"""``rpc.handlers``: the request id on every line logged while an RPC is served (pure: the
wrappers called directly, with a stand-in servicer context)."""

from __future__ import annotations

import asyncio
import gc
import io
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import pytest
import structlog

from dispatcher.logs import configure_logging, get_logger
from dispatcher.rpc.handlers import streaming, unary

log = get_logger(__name__)


class Context:
    def __init__(self, metadata: Sequence[tuple[str, str]] = ()) -> None:
        self.metadata = tuple(metadata)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata


class Servicer:
    @unary
    async def Echo(self, request: str, context: Any) -> str:
        log.info("serving", request=request)
        return request

    @streaming
    async def Stream(self, request: str, context: Any) -> AsyncIterator[str]:
        log.info("streaming", request=request)
        yield request


@pytest.fixture
def json_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The server's JSON log configuration, its lines written to a buffer instead of stderr."""
    configure_logging("json", "info")
    buffer = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buffer))
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    structlog.reset_defaults()


async def test_lines_logged_while_serving_carry_the_callers_request_id(
    json_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    assert await Servicer().Echo("a", Context([("x-request-id", "caller-7")])) == "a"
    assert [item async for item in Servicer().Stream("b", Context([("x-request-id", "s-1")]))]
    log.info("between calls")
    lines = json_lines()
    assert [(line["event"], line.get("request_id")) for line in lines] == [
        ("serving", "caller-7"),
        ("streaming", "s-1"),
        ("between calls", None),
    ]


async def test_a_call_without_a_sane_request_id_gets_a_fresh_one_of_its_own(
    json_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    await Servicer().Echo("a", Context())
    await Servicer().Echo("b", Context([("x-request-id", "x" * 129)]))  # too long: replaced
    first, second = (line["request_id"] for line in json_lines())
    assert first != second
    assert "x" * 129 not in (first, second)


async def test_a_stream_the_caller_left_is_closed_in_another_context_without_error() -> None:
    """A response stream abandoned mid-way is closed later by the loop's async-generator
    finaliser, in a context of its own: ending it must not raise there."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))

    async def take_one() -> None:
        stream = Servicer().Stream("c", Context([("x-request-id", "left")]))
        await anext(stream)  # suspended mid-stream, then dropped with this task's context

    try:
        await asyncio.create_task(take_one())
        gc.collect()  # the finaliser schedules the stream's aclose() on the loop
        for _ in range(5):
            await asyncio.sleep(0)
        assert errors == []
    finally:
        loop.set_exception_handler(None)
