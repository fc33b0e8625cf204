"""The pipelined script connection against a real Redis: replies in order, the URL's database,
NOSCRIPT recovery, error replies, lost connections and deadlines."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import hiredis
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from dispatcher.ledger.redis_pipe import (
    CommandNotSent,
    Endpoint,
    ScriptPipe,
    _Protocol,
    encode_command,
)
from tests.ledger.proxy import Proxy
from tests.redis_tls import TlsRedis

pytestmark = [pytest.mark.redis, pytest.mark.both_loops]

ECHO = "redis.call('SET', KEYS[1], ARGV[1]) return ARGV[1]"
REFUSE = "return redis.error_reply('NORES no such reservation')"


def sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def soon(seconds: float = 2.0) -> float:
    return asyncio.get_running_loop().time() + seconds


@pytest.fixture
async def pipe(redis_db: str) -> AsyncIterator[ScriptPipe]:
    p = ScriptPipe.from_url(redis_db)
    yield p
    await p.aclose()


def test_commands_are_encoded_as_resp_bulk_strings() -> None:
    assert encode_command(["EVALSHA", "ab", 1, b"k\r\n"]) == (
        b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$3\r\nk\r\n\r\n"
    )


def test_the_endpoint_comes_from_the_url() -> None:
    e = Endpoint.from_url("redis://app:s3cret@cache.internal:6380/4")
    assert (e.host, e.port, e.db) == ("cache.internal", 6380, 4)
    assert (e.username, e.password) == ("app", "s3cret")
    assert e.handshake() == [
        encode_command(["AUTH", "app", "s3cret"]),
        encode_command(["SELECT", 4]),
    ]
    assert Endpoint.from_url("unix:///run/redis.sock?db=2").path == "/run/redis.sock"
    assert Endpoint.from_url("redis://h:6379/0").handshake() == []


def test_rediss_urls_verify_the_server_unless_told_not_to() -> None:
    verified = Endpoint.from_url("rediss://cache.internal:6380/0").ssl
    assert verified.verify_mode == ssl.CERT_REQUIRED
    assert verified.check_hostname
    unverified = Endpoint.from_url("rediss://cache.internal:6380/0?ssl_cert_reqs=none").ssl
    assert unverified.verify_mode == ssl.CERT_NONE
    assert Endpoint.from_url("redis://cache.internal:6379/0").ssl is None


class RecordingTransport(asyncio.Transport):
    """What a connection writes, one entry per write call (pure unit tests only)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing


async def test_commands_of_one_loop_turn_leave_in_one_write_in_order() -> None:
    protocol, transport = _Protocol(), RecordingTransport()
    protocol.connection_made(transport)
    commands = [encode_command(["PING", str(i)]) for i in range(3)]
    replies = [protocol.send(c) for c in commands]
    assert transport.writes == []  # not before the turn ends
    await asyncio.sleep(0)
    assert transport.writes == [b"".join(commands)]
    protocol.data_received(b"+0\r\n+1\r\n+2\r\n")
    assert [r.result() for r in replies] == [b"0", b"1", b"2"]
    later = protocol.send(commands[0])  # a later turn: a write of its own
    await asyncio.sleep(0)
    assert transport.writes[1:] == [commands[0]]
    later.cancel()


async def test_commands_of_a_connection_closed_before_its_turn_ended_fail_as_not_sent() -> None:
    protocol, transport = _Protocol(), RecordingTransport()
    protocol.connection_made(transport)
    written = protocol.send(encode_command(["PING"]))
    await asyncio.sleep(0)  # the turn ends: PING is written
    unsent = [protocol.send(encode_command(["ECHO", str(i)])) for i in range(2)]
    transport.closing = True  # aborted by another call's deadline in the same turn
    await asyncio.sleep(0)
    assert transport.writes == [encode_command(["PING"])]
    for reply in unsent:
        with pytest.raises(CommandNotSent):
            reply.result()
    protocol.connection_lost(None)
    with pytest.raises(RedisConnectionError) as caught:
        written.result()
    assert not isinstance(caught.value, CommandNotSent), "PING was written: effect unknown"


async def test_commands_of_a_connection_lost_before_its_turn_ended_fail_as_not_sent() -> None:
    protocol, transport = _Protocol(), RecordingTransport()
    protocol.connection_made(transport)
    reply = protocol.send(encode_command(["PING"]))
    protocol.connection_lost(ConnectionResetError())  # before the turn's write
    transport.closing = True
    await asyncio.sleep(0)  # the write that was due finds nothing to send
    assert transport.writes == []
    with pytest.raises(CommandNotSent):
        reply.result()


async def test_concurrent_calls_each_get_their_own_reply_in_the_urls_database(
    pipe: ScriptPipe, redis_db: str
) -> None:
    replies = await asyncio.gather(
        *(pipe.call(sha(ECHO), ECHO, [f"k{i}"], [f"v{i}"], soon()) for i in range(500))
    )
    assert replies == [f"v{i}".encode() for i in range(500)]
    client = aioredis.Redis.from_url(redis_db)
    try:
        assert await client.get("k499") == b"v499"  # SELECTed the URL's database
    finally:
        await client.aclose()


async def test_a_flushed_script_cache_is_refilled_by_sending_the_text(
    pipe: ScriptPipe, redis_db: str
) -> None:
    assert await pipe.call(sha(ECHO), ECHO, ["k"], ["before"], soon()) == b"before"
    client = aioredis.Redis.from_url(redis_db)
    try:
        await client.script_flush()
    finally:
        await client.aclose()
    assert await pipe.call(sha(ECHO), ECHO, ["k"], ["after"], soon()) == b"after"


async def test_an_error_reply_raises_as_redis_py_would(pipe: ScriptPipe) -> None:
    with pytest.raises(ResponseError) as caught:
        await pipe.call(sha(REFUSE), REFUSE, ["k"], [], soon())
    assert str(caught.value) == "NORES no such reservation"  # "ERR " stripped, as redis-py does
    assert await pipe.call(sha(ECHO), ECHO, ["k"], ["still fine"], soon()) == b"still fine"


async def test_a_lost_connection_fails_the_call_and_the_next_one_reconnects(redis_db: str) -> None:
    proxy = await Proxy(redis_db).start()
    pipe = ScriptPipe.from_url(proxy.url)
    try:
        assert await pipe.call(sha(ECHO), ECHO, ["k"], ["up"], soon()) == b"up"
        await proxy.cut()
        with pytest.raises((RedisConnectionError, OSError)):
            await pipe.call(sha(ECHO), ECHO, ["k"], ["down"], soon())
        await proxy.start()
        assert await pipe.call(sha(ECHO), ECHO, ["k"], ["back"], soon()) == b"back"
    finally:
        await pipe.aclose()
        await proxy.cut()


async def test_a_call_without_a_reply_by_its_deadline_times_out_and_drops_the_connection() -> None:
    """A server that accepts and never answers: the caller gets TimeoutError at its deadline,
    and the next call opens a new connection instead of queueing behind the silent one."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read()  # until the client goes away

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pipe = ScriptPipe.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        for attempt in (1, 2):
            with pytest.raises(TimeoutError):
                await pipe.call(sha(ECHO), ECHO, ["k"], ["v"], soon(0.05))
            assert len(accepted) == attempt
    finally:
        await pipe.aclose()
        server.close()
        for writer in accepted:
            writer.close()
        await server.wait_closed()


class HeldServer:
    """Answers ``+OK`` to each command in order, at once unless its last argument is one of
    ``held``: that reply waits for its event (forever, if the test never sets it)."""

    def __init__(self, held: dict[bytes, asyncio.Event]) -> None:
        self.held = held
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        commands = hiredis.Reader()
        while data := await reader.read(65536):
            commands.feed(data)
            while (command := commands.gets()) is not False:
                if (event := self.held.get(command[-1])) is not None:
                    await event.wait()
                writer.write(b"+OK\r\n")


@asynccontextmanager
async def held_pipe(
    held: dict[bytes, asyncio.Event],
) -> AsyncIterator[tuple[HeldServer, ScriptPipe]]:
    held_server = HeldServer(held)
    server = await asyncio.start_server(held_server.serve, "127.0.0.1", 0)
    pipe = ScriptPipe.from_url(f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0")
    try:
        yield held_server, pipe
    finally:
        await pipe.aclose()
        server.close()
        for writer in held_server.writers:
            writer.close()
        await server.wait_closed()


async def test_a_shorter_deadline_behind_a_longer_one_still_ends_first() -> None:
    """The connection's one timer is armed for the earliest deadline pending, whichever call
    has it; the call past it closes the connection under the patient one."""
    never = asyncio.Event()
    async with held_pipe({b"a": never, b"b": never}) as (server, pipe):
        assert await pipe.call(sha(ECHO), ECHO, ["k"], ["warm"], soon(600.0)) == b"OK"  # connected
        patient = asyncio.create_task(pipe.call(sha(ECHO), ECHO, ["k"], ["a"], soon(600.0)))
        await asyncio.sleep(0)  # the patient call is on the wire first
        with pytest.raises(TimeoutError):
            await pipe.call(sha(ECHO), ECHO, ["k"], ["b"], soon(0.02))
        with pytest.raises(RedisConnectionError):
            await patient  # failed with the connection, long before its own deadline
        assert await pipe.call(sha(ECHO), ECHO, ["k"], ["c"], soon()) == b"OK"
        assert server.connections == 2


async def test_a_call_answered_in_time_leaves_the_connection_to_those_with_time_left() -> None:
    """The timer armed for an answered call's deadline fires on nothing due: it re-arms for
    the calls still pending, and the connection stays up."""
    release = asyncio.Event()
    async with held_pipe({b"b": release}) as (server, pipe):
        assert await pipe.call(sha(ECHO), ECHO, ["k"], ["a"], soon(0.02)) == b"OK"
        patient = asyncio.create_task(pipe.call(sha(ECHO), ECHO, ["k"], ["b"], soon(600.0)))
        await asyncio.sleep(0.1)  # the answered call's deadline passes: time is under test
        release.set()
        assert await patient == b"OK"
        assert server.connections == 1


async def test_a_call_already_past_its_deadline_is_not_sent_and_spares_the_others(
    pipe: ScriptPipe, redis_db: str
) -> None:
    """A retry late in its caller's deadline fails at once: nothing on the wire, and the
    connection (with another caller's call pending on it) stays up."""
    await pipe.call(sha(ECHO), ECHO, ["k"], ["warm"], soon())  # connected, script cached
    pending = asyncio.create_task(pipe.call(sha(ECHO), ECHO, ["k"], ["other"], soon()))
    await asyncio.sleep(0)  # the other call is on the wire
    with pytest.raises(TimeoutError):
        await pipe.call(sha(ECHO), ECHO, ["late"], ["never"], soon(-1.0))
    assert await pending == b"other"
    client = aioredis.Redis.from_url(redis_db)
    try:
        assert await client.exists("late") == 0
    finally:
        await client.aclose()


async def test_refused_credentials_are_a_connection_error(redis_url: str) -> None:
    """This Redis has no password: AUTH is refused, and the call says so."""
    pipe = ScriptPipe.from_url(redis_url.replace("redis://", "redis://:wrong@", 1))
    try:
        with pytest.raises(RedisConnectionError, match="refused the connection"):
            await pipe.call(sha(ECHO), ECHO, ["k"], ["v"], soon())
    finally:
        await pipe.aclose()


async def test_a_tls_server_is_reached_over_rediss_and_its_certificate_verified(
    redis_tls: TlsRedis,
) -> None:
    pipe = ScriptPipe.from_url(redis_tls.url)
    try:
        replies = await asyncio.gather(
            *(pipe.call(sha(ECHO), ECHO, [f"t{i}"], [f"v{i}"], soon()) for i in range(50))
        )
        assert replies == [f"v{i}".encode() for i in range(50)]
    finally:
        await pipe.aclose()


async def test_a_tls_server_whose_certificate_is_not_trusted_is_refused(
    redis_tls: TlsRedis,
) -> None:
    """Without the CA (the system's trust store only), the handshake fails: no call runs."""
    pipe = ScriptPipe.from_url(f"rediss://127.0.0.1:{redis_tls.port}/0")
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            await pipe.call(sha(ECHO), ECHO, ["untrusted"], ["v"], soon())
    finally:
        await pipe.aclose()
