"""Decorators that turn servicer methods into well-behaved RPC handlers.

Each handler gets a request id set for its log lines (``logs.REQUEST_ID``), has its
``DispatcherError`` translated into a gRPC status through ``rpc.status`` (the only place
codes are chosen), and never leaks a traceback to a caller: an unexpected exception is
logged with the request id and answered with INTERNAL. A servicer with an
``observe_rpc(method, code, seconds)`` attribute (``Metrics.observe_rpc``) is told how long
each unary call spent in its handler and with which status code it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Concatenate, TypeVar

import grpc

from dispatcher import errors
from dispatcher.logs import REQUEST_ID, get_logger
from dispatcher.rpc.status import rich_status, status_code_for

log = get_logger(__name__)

Servicer = TypeVar("Servicer")
Request = TypeVar("Request")
Response = TypeVar("Response")
Context = grpc.aio.ServicerContext[Any, Any]

REQUEST_ID_HEADER = "x-request-id"
OBSERVER = "observe_rpc"  # the servicer attribute unary() reports each call's time to


#: Log-correlation ids for calls that bring none: a random per-process prefix and a counter.
#: Unique per process without a uuid4 (a getrandom syscall) on every call of the Route path.
_FRESH_PREFIX = secrets.token_hex(6)
_fresh_ids = itertools.count(1)


def request_id_of(context: Context) -> str:
    """The caller's ``x-request-id`` if it sent a sane one, else a fresh id."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return f"{_FRESH_PREFIX}-{next(_fresh_ids):x}"


def _code_name(exc: Exception) -> str:
    """The status code a handler's exception is answered with (see ``_abort``)."""
    return status_code_for(exc).name if isinstance(exc, errors.DispatcherError) else "INTERNAL"


def _aborted_with(context: Context) -> str:
    """The code a handler that aborted by itself set (UNKNOWN if gRPC does not say)."""
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


async def _abort(context: Context, exc: BaseException, rpc: str) -> None:
    if isinstance(exc, errors.DispatcherError):
        log.debug("rpc_error", rpc=rpc, error=str(exc))
        await context.abort_with_status(rich_status(exc))
    log.exception("rpc_crashed", rpc=rpc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")


def unary(
    method: Callable[Concatenate[Servicer, Request, Context, ...], Awaitable[Response]],
) -> Callable[[Servicer, Request, Context], Awaitable[Response]]:
    """Wrap a unary-response handler ``async def M(self, request, context)``."""

    name = method.__name__

    @functools.wraps(method)
    async def handler(self: Servicer, request: Request, context: Context) -> Response:
        started, code = time.perf_counter(), "OK"
        # set/reset rather than a context manager: its generator costs more than the setting
        # on a path every Route and Release takes.
        token = REQUEST_ID.set(request_id_of(context))
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            code = _aborted_with(context)
            raise
        except asyncio.CancelledError:  # the caller gave up, or its deadline passed
            code = "CANCELLED"
            raise
        except Exception as exc:
            code = _code_name(exc)
            await _abort(context, exc, name)
            raise  # unreachable: abort raises
        finally:
            REQUEST_ID.reset(token)
            observe = getattr(self, OBSERVER, None)
            if observe is not None:
                observe(name, code, time.perf_counter() - started)

    return handler


def streaming(
    method: Callable[Concatenate[Servicer, Request, Context, ...], AsyncIterator[Response]],
) -> Callable[[Servicer, Request, Context], AsyncIterator[Response]]:
    """Wrap a response-streaming handler ``async def M(self, request, context): yield ...``."""

    @functools.wraps(method)
    async def handler(
        self: Servicer, request: Request, context: Context
    ) -> AsyncIterator[Response]:
        token = REQUEST_ID.set(request_id_of(context))
        try:
            async for item in method(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, method.__name__)
        finally:
            # A stream the caller left is closed by the loop's async-generator finaliser, in
            # a context of its own, which refuses this context's token: nothing to undo there.
            with contextlib.suppress(ValueError):
                REQUEST_ID.reset(token)

    return handler
