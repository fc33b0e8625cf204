"""One pipelined connection for the ledger's script calls on a single Redis server.

Every Route and Release is one script call, and redis-py's per-call machinery (a pooled
connection taken and given back, a retry wrapper, a timeout, command packing in Python)
costs more CPU than the script itself (DESIGN §10). This connection sends each call
without waiting for the replies before it, and matches replies to calls in order (Redis
answers a connection's commands in the order it received them). Parsing is hiredis's, the
library redis-py itself uses for it.

Commands made in one turn of the event loop leave in one write, at the end of that turn:
the Routes and Releases whose gRPC events arrived together then cost one ``write`` system
call between them instead of one each. That call is the dearest part of sending (on
loopback it also runs the receiving side's network stack, waking Redis), and at
saturation this halves the writes per call; the wait is the rest of the turn, microseconds.

Failure semantics are redis-py's: a call that gets no reply by its deadline closes the
connection (whatever was pending on it fails with ``ConnectionError``: its effect is
unknown, exactly as for a timed-out call), and the next call opens a new one. A call the
connection closed under before its turn's write fails with ``CommandNotSent``, a
``ConnectionError`` that says it never reached Redis, so it did not run. A NOSCRIPT
reply (a restarted or flushed server) sends the script's text once with EVAL.

Only single servers (``redis://``, ``rediss://``, ``unix://``): a cluster's calls must go to
the node owning their slot, which redis-py's cluster client already does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import RedisSSLContext, SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from dispatcher.ledger.expiry import DeadlineTimer, fail_overdue

Arg = str | bytes | int | float


def encode_command(args: Sequence[Arg]) -> bytes:
    """One command in RESP: an array of bulk strings (hiredis packs it, in C)."""
    # The stub types the argument as a 1-tuple (any length is what it takes) and leaves the
    # result untyped (bytes).
    packed: bytes = hiredis.pack_command(
        args if isinstance(args, tuple) else tuple(args)  # type: ignore[arg-type]
    )
    return packed


def _text(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect, read from a ``redis://``, ``rediss://`` or ``unix://`` URL."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: Any = None  # an ssl.SSLContext for rediss://

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        options = parse_url(url)
        ssl_context = None
        if options.get("connection_class") is SSLConnection:
            ssl_context = RedisSSLContext(
                keyfile=_text(options.get("ssl_keyfile")),
                certfile=_text(options.get("ssl_certfile")),
                cert_reqs=_text(options.get("ssl_cert_reqs")) or "required",
                ca_certs=_text(options.get("ssl_ca_certs")),
                check_hostname=bool(options.get("ssl_check_hostname", True)),
            ).get()
        return cls(
            host=str(options.get("host", "localhost")),
            port=int(options.get("port", 6379)),
            path=_text(options.get("path")),
            db=int(options.get("db", 0)),
            username=_text(options.get("username")),
            password=_text(options.get("password")),
            ssl=ssl_context,
        )

    def handshake(self) -> list[bytes]:
        """Commands that make a fresh connection this endpoint's: credentials, database."""
        commands = []
        if self.password is not None:
            auth = [self.username, self.password] if self.username else [self.password]
            commands.append(encode_command(["AUTH", *auth]))
        if self.db:
            commands.append(encode_command(["SELECT", self.db]))
        return commands


class CommandNotSent(RedisConnectionError):
    """The connection closed before the command was written: it did not run."""


class _Protocol(asyncio.Protocol):
    """Writes each loop turn's commands at its end; hands each reply to the oldest
    waiting future."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        # Its loop, kept: asyncio.get_running_loop() makes a getpid() system call each time
        # (a fork check), and each call on the Route path would ask three times.
        self.loop = asyncio.get_running_loop()
        self.closed = self.loop.create_future()
        # Error replies become the exceptions redis-py would raise for them (ResponseError
        # with the "ERR " prefix stripped, NoScriptError, BusyLoadingError...).
        self._reader = hiredis.Reader(replyError=BaseParser.parse_error)
        self._pending: deque[asyncio.Future[Any]] = deque()
        self._deadlines: deque[float | None] = deque()  # each pending reply's, in step
        self._outbox: list[bytes] = []  # commands of this loop turn, written at its end
        # One timer for every pending reply, armed for the earliest deadline among them.
        self._expiry = DeadlineTimer(self._expire_due)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's do not subclass asyncio.Transport, so no isinstance).
        self.transport = cast(asyncio.Transport, transport)

    @property
    def usable(self) -> bool:
        # An aborted transport is closing at once; connection_lost comes a loop turn later.
        return self.transport is not None and not self.transport.is_closing()

    def send(self, command: bytes, deadline: float | None = None) -> asyncio.Future[Any]:
        """The reply's future; past ``deadline`` (a loop time) it fails with TimeoutError
        and the connection closes (see ``_expire_due``)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            raise RedisConnectionError("connection to Redis closed")
        reply: asyncio.Future[Any] = self.loop.create_future()
        self._pending.append(reply)
        self._deadlines.append(deadline)
        if deadline is not None:
            self._expiry.arm(self.loop, deadline)
        if not self._outbox:
            self.loop.call_soon(self._flush)
        self._outbox.append(command)
        return reply

    def _expire_due(self) -> None:
        """A reply is past its deadline: it fails with TimeoutError. It may still come, behind
        which nothing can be trusted to be timely: the connection closes (every other pending
        reply fails with ConnectionError) and the next call opens a new one, as redis-py does
        after a socket timeout. Otherwise the timer waits for the earliest deadline left."""
        waiting = zip(self._deadlines, self._pending, strict=True)
        expired, earliest = fail_overdue(waiting, self.loop.time())
        if expired:
            self.abort()
        elif earliest is not None:
            self._expiry.arm(self.loop, earliest)

    def _flush(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            self._fail_unsent()  # closed meanwhile (e.g. another call's deadline aborted it)
            return
        outbox, self._outbox = self._outbox, []
        transport.write(b"".join(outbox))

    def _fail_unsent(self) -> None:
        """Fail the replies of the commands still in the outbox: the newest pending ones,
        since both grow together in ``send``."""
        outbox, self._outbox = self._outbox, []
        error = CommandNotSent("connection to Redis closed before the command was sent")
        # min(): were that invariant ever broken, an IndexError here would leave the rest
        # of the pending replies unfailed, their callers waiting out their deadlines.
        for _ in range(min(len(outbox), len(self._pending))):
            waiting = self._pending.pop()
            self._deadlines.pop()
            if not waiting.done():
                waiting.set_exception(error)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            waiting = self._pending.popleft()
            self._deadlines.popleft()
            if not waiting.done():  # its caller may have given up on it
                waiting.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_unsent()
        error = RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}")
        self._expiry.cancel()
        self._deadlines.clear()
        while self._pending:
            waiting = self._pending.popleft()
            if not waiting.done():
                waiting.set_exception(error)
        if not self.closed.done():
            self.closed.set_result(None)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class ScriptPipe:
    """``await pipe.call(sha, text, keys, args, deadline)`` -> the script's reply.

    ``deadline`` is a loop time; a call without its reply by then raises TimeoutError and
    closes the connection. Error replies raise what redis-py raises for them (so callers read
    a script's refusal codes as they do through redis-py), lost connections its
    ``ConnectionError``.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._protocol: _Protocol | None = None
        self._connecting = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str) -> ScriptPipe:
        return cls(Endpoint.from_url(url))

    async def call(
        self, sha: str, text: str, keys: Sequence[str], args: Sequence[Arg], deadline: float
    ) -> Any:
        reply = await self._request(("EVALSHA", sha, len(keys), *keys, *args), deadline)
        if isinstance(reply, NoScriptError):
            reply = await self._request(("EVAL", text, len(keys), *keys, *args), deadline)
        if isinstance(reply, RedisError):
            raise reply
        return reply

    async def _request(self, command: Sequence[Arg], deadline: float) -> Any:
        protocol = self._protocol
        if protocol is None or not protocol.usable:
            protocol = await self._connect(deadline)
        if protocol.loop.time() >= deadline:
            # Out of time before sending (a retry late in its caller's deadline): fail
            # without a call on the wire and without dropping the connection under others.
            raise TimeoutError
        # The connection's one timer rather than asyncio.timeout_at: the same deadline for a
        # fraction of the cost, on a path every Route and Release takes.
        return await protocol.send(encode_command(command), deadline)

    async def _connect(self, deadline: float) -> _Protocol:
        async with asyncio.timeout_at(deadline), self._connecting:
            if self._protocol is not None and self._protocol.usable:
                return self._protocol  # another caller connected while this one waited
            protocol = await self._open()
            try:
                for command in self._endpoint.handshake():
                    reply = await protocol.send(command)
                    if isinstance(reply, RedisError):
                        raise RedisConnectionError(f"Redis refused the connection: {reply}")
            except BaseException:
                protocol.abort()
                raise
            self._protocol = protocol
            return protocol

    async def _open(self) -> _Protocol:
        loop, e = asyncio.get_running_loop(), self._endpoint
        if e.path is not None:
            _, protocol = await loop.create_unix_connection(_Protocol, e.path)
        else:
            _, protocol = await loop.create_connection(_Protocol, e.host, e.port, ssl=e.ssl)
        return protocol

    async def aclose(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(protocol.closed), 1.0)
