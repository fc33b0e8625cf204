"""The WebSocket gateway: a task's result stream for browsers and anything without gRPC.

Endpoint: ``GET /v1/tasks/{task_id}/events?after=<event id>`` upgraded to a WebSocket. The
server sends one JSON text frame per event, exactly the sequence of ``AwaitResult``::

    {"event_id": "1718000000000-0", "kind": "progress" | "final" | "error" | "keepalive",
     "payload": "...", "encoding": "utf-8" | "base64", "content_type": "application/json",
     "published_at": "2024-06-10T06:13:20.000Z"}

``payload`` is UTF-8 text when ``content_type`` is textual (``text/*``, JSON, XML) and the
bytes decode, else base64; ``encoding`` says which. A keepalive carries only ``kind`` and an
empty ``event_id`` and comes whenever nothing was sent for ``keepalive_interval``. After FINAL
or ERROR the server closes with 1000. To resume, reconnect with ``?after=<last event_id>``.

Authentication, by the task's result token, in one of two places:

- ``Authorization: Bearer <token>`` for clients that can set headers;
- browsers cannot, so they offer it as a subprotocol next to ``dispatcher.v1``:
  ``new WebSocket(url, ["dispatcher.v1", "bearer." + token])``. The server answers
  ``dispatcher.v1`` (a browser drops the connection unless the server picks one it offered),
  never echoing the token.

``?token=`` is refused on purpose: URLs end up in proxy and access logs, and secrets must
never reach a log (DESIGN §9).

Close codes: 4400 bad request (malformed ``after``, bad task id, token in the URL),
4401 no token, 4403 wrong token, 4404 unknown or expired task, 1013 store unavailable (retry
later), 1011 internal error, 1001 gateway shutting down. An unknown path is an HTTP 404 before
any upgrade; ``/healthz`` answers 200; past ``max_connections`` the upgrade gets HTTP 503.

Memory per connection is bounded: incoming frames are tiny and few (``max_size`` 4 KiB,
``max_queue`` 4; clients have nothing to say), per-message compression is off (its zlib state
costs ~100 KiB per connection), and a send waits while more than ``write_limit`` bytes are
unacknowledged, so a client that stops reading stops its own relay (``relay.follow`` then holds
at most one page of events).

File descriptors: every connection is one socket, so the process needs
``ulimit -n`` ≥ ``max_connections`` + a margin (a few hundred for gRPC and Redis). Typical
defaults (1024 soft) allow only ~900 streams: raise it with ``ulimit -n 65536`` in the start
script, ``LimitNOFILE=65536`` in a systemd unit, or the container runtime's nofile ulimit
(Docker ``--ulimit nofile=65536:65536``); behind a load balancer also check its own limits
and idle timeout (keepalives keep well under 60 s). With the Redis store, waiting streams add
no Redis connections (one shared subscription per process, see ``wakeups``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from base64 import b64encode
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from dispatcher import errors
from dispatcher.logs import get_logger
from dispatcher.relay.follow import DEFAULT_KEEPALIVE_INTERVAL, follow
from dispatcher.relay.model import ResultEvent, ResultStore

log = get_logger(__name__)

SUBPROTOCOL = Subprotocol("dispatcher.v1")
TOKEN_PROTOCOL_PREFIX = "bearer."
_PATH = re.compile(r"^/v1/tasks/([^/]+)/events$")
_TEXTUAL = re.compile(r"^(text/.*|application/(.*\+)?(json|xml))(;.*)?$", re.IGNORECASE)

CLOSE_NORMAL = 1000
CLOSE_INTERNAL = 1011
CLOSE_TRY_LATER = 1013
CLOSE_BY_ERROR: dict[type[errors.DispatcherError], int] = {
    errors.InvalidArgument: 4400,
    errors.Unauthenticated: 4401,
    errors.PermissionDenied: 4403,
    errors.NotFound: 4404,
    errors.BackendUnavailable: CLOSE_TRY_LATER,
}


@dataclass(frozen=True)
class _Target:
    task_id: str
    after: str
    token: str


def close_code_for(error: errors.DispatcherError) -> int:
    for cls in type(error).__mro__:
        code = CLOSE_BY_ERROR.get(cls)
        if code is not None:
            return code
    return CLOSE_INTERNAL


def frame_of(event: ResultEvent | None) -> str:
    """The JSON text frame for ``event`` (``None``: a keepalive)."""
    if event is None:
        return '{"event_id": "", "kind": "keepalive"}'
    payload, encoding = _payload_text(event)
    stamp = datetime.fromtimestamp(event.published_at, UTC).isoformat(timespec="milliseconds")
    return json.dumps(
        {
            "event_id": event.event_id,
            "kind": event.kind.value,
            "payload": payload,
            "encoding": encoding,
            "content_type": event.content_type,
            "published_at": stamp.replace("+00:00", "Z"),
        }
    )


def _payload_text(event: ResultEvent) -> tuple[str, str]:
    if _TEXTUAL.match(event.content_type):
        with contextlib.suppress(UnicodeDecodeError):
            return event.payload.decode("utf-8"), "utf-8"
    return b64encode(event.payload).decode("ascii"), "base64"


def token_of(headers: Headers) -> str:
    """The bearer token from ``Authorization`` or an offered ``bearer.<token>`` subprotocol."""
    authorization = headers.get("Authorization", "")
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        return credential.strip()
    for value in headers.get_all("Sec-WebSocket-Protocol"):
        for offered in value.split(","):
            offered = offered.strip()
            if offered.startswith(TOKEN_PROTOCOL_PREFIX):
                return offered[len(TOKEN_PROTOCOL_PREFIX) :]
    raise errors.Unauthenticated("no result token (Authorization header or bearer subprotocol)")


def target_of(path: str, headers: Headers) -> _Target:
    parts = urlsplit(path)
    match = _PATH.match(parts.path)
    if match is None:
        raise errors.NotFound("path", parts.path)
    query = parse_qs(parts.query)
    if "token" in query:
        raise errors.InvalidArgument("token", "send it as a header or subprotocol, not in the URL")
    after = query.get("after", [""])[-1]
    return _Target(unquote(match[1]), after, token_of(headers))


def _select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


class ResultGateway:
    """The gateway server: ``await start()``, then ``await stop()``; ``port`` once started."""

    def __init__(
        self,
        store: ResultStore,
        host: str = "127.0.0.1",
        port: int = 8081,
        *,
        keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL,
        write_limit: int = 64 * 1024,
        max_connections: int = 10_000,
        ping_interval: float | None = 20.0,
    ) -> None:
        self.store = store
        self.host = host
        self.port = port
        self.keepalive_interval = keepalive_interval
        self.write_limit = write_limit
        self.max_connections = max_connections
        self.ping_interval = ping_interval
        self.connections = 0
        self._server: Server | None = None

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            select_subprotocol=_select_subprotocol,
            compression=None,
            max_size=4096,
            max_queue=4,
            write_limit=self.write_limit,
            ping_interval=self.ping_interval,
        )
        sockets = list(self._server.sockets)
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("gateway_serving", host=self.host, port=self.port)

    async def stop(self) -> None:
        """Close every connection with 1001 (clients resume elsewhere) and stop listening."""
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        log.info("gateway_stopped")

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        if _PATH.match(path) is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "no such endpoint\n")
        if self.connections >= self.max_connections:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many streams\n")
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        self.connections += 1
        pump = asyncio.create_task(self._pump(connection))
        try:
            # Clients have nothing to say; reading notices when they leave, so the relay
            # stops at once instead of at its next keepalive.
            async for _ in connection:
                pass
        except ConnectionClosed:
            pass
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            self.connections -= 1

    async def _pump(self, connection: ServerConnection) -> None:
        assert connection.request is not None  # set once the handshake is done
        try:
            target = target_of(connection.request.path, connection.request.headers)
            events = follow(
                self.store,
                target.task_id,
                target.token,
                target.after,
                keepalive_interval=self.keepalive_interval,
            )
            async with contextlib.aclosing(events):
                async for event in events:
                    await connection.send(frame_of(event))
            await connection.close(CLOSE_NORMAL, "task ended")
        except ConnectionClosed:
            pass
        except errors.DispatcherError as exc:
            await connection.close(close_code_for(exc), str(exc)[:120])
        except Exception:
            log.exception("gateway_crashed")
            await connection.close(CLOSE_INTERNAL, "internal error")


async def serve_gateway(
    store: ResultStore,
    host: str,
    port: int,
    *,
    keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL,
    max_connections: int = 10_000,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the gateway until ``stop`` is set (or the task is cancelled), then close it."""
    gateway = ResultGateway(
        store, host, port, keepalive_interval=keepalive_interval, max_connections=max_connections
    )
    await gateway.start()
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await gateway.stop()
