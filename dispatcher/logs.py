"""Structured logging: structlog on top of the standard library, JSON or console.

Every RPC sets a request id (from the caller's ``x-request-id`` metadata, else a new one) in
``REQUEST_ID``, so every line logged while serving it carries the id.
Secrets never reach a log line: config values holding them are pydantic ``SecretStr``.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Literal

import structlog
from structlog.types import EventDict, WrappedLogger

LogFormat = Literal["json", "console"]

#: The request id of the RPC being served (``rpc.handlers`` sets it). A context variable of
#: its own rather than structlog's ``bind_contextvars``, which costs seven times as much to
#: bind and reset, and every Route and Release binds one.
REQUEST_ID: ContextVar[str | None] = ContextVar("dispatcher_request_id", default=None)


def add_request_id(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """The structlog processor that puts ``REQUEST_ID`` on a line logged while it is set."""
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


def configure_logging(log_format: LogFormat = "console", level: str = "info") -> None:
    """Route structlog and stdlib logging to stderr in one format. Safe to call twice."""
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        numeric_level = logging.INFO
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_request_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # grpc and asyncio log through the standard library; keep them at warning and above.
    logging.basicConfig(level=max(numeric_level, logging.WARNING), stream=sys.stderr)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
