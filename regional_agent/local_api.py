"""The local worker API: a small HTTP/1.1 JSON server on loopback (asyncio streams).

    POST /v1/tasks/start    {"task_id", "agent_version", "lane"?: "light|standard|heavy"}
    POST /v1/tasks/finish   {"task_id", "outcome", "slow"?: bool}
    POST /v1/usage          {"reservation_id", "requests", "input_tokens", "output_tokens",
                             "final"?, "outcome"?, "duration_s"?, "agent_version"?}
                            -> {"report_id"}: in the on-disk outbox when this returns
    POST /v1/observations   {"pool_id", "headers": {...}, "status"?: int}

Errors answer 400 ``{"error": "field: reason"}`` (404 for an unknown task). One request per
connection: workers call this a few times per task, so keep-alive is not worth its code.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from dispatcher.errors import DispatcherError, InvalidArgument, NotFound
from dispatcher.fleet.model import Lane, UsageReport
from dispatcher.rpc.status import duration_from_seconds
from dispatcher.v1 import agent_pb2, common_pb2
from regional_agent.headers import observation_from_headers
from regional_agent.outbox import Outbox
from regional_agent.state import LocalState

MAX_BODY = 256 * 1024
REQUEST_TIMEOUT_S = 10.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
Body = Mapping[str, Any]
_OUTCOMES = {
    name.removeprefix("TASK_OUTCOME_").lower(): value
    for name, value in common_pb2.TaskOutcome.items()
    if value != common_pb2.TASK_OUTCOME_UNSPECIFIED
}


class LocalApi:
    """Routes worker calls to the agent's state and outbox."""

    def __init__(self, state: LocalState, outbox: Outbox) -> None:
        self.state = state
        self.outbox = outbox
        self._routes: dict[str, Callable[[Body], dict[str, Any]]] = {
            "/v1/tasks/start": self._start,
            "/v1/tasks/finish": self._finish,
            "/v1/usage": self._usage,
            "/v1/observations": self._observations,
        }
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """One request -> (status, JSON reply). Separate from the socket for testing."""
        route = self._routes.get(path)
        if route is None:
            return 404, {"error": f"no such endpoint: {path}"}
        if method != "POST":
            return 405, {"error": "use POST"}
        try:
            data = json.loads(body or b"{}")
            if not isinstance(data, dict):
                raise InvalidArgument("(body)", "must be a JSON object")
            return 200, route(data)
        except json.JSONDecodeError as exc:
            return 400, {"error": f"(body): invalid JSON: {exc.msg}"}
        except NotFound as exc:
            return 404, {"error": str(exc)}
        except (DispatcherError, KeyError, TypeError, ValueError) as exc:
            reason = f"{exc.args[0]}: required" if isinstance(exc, KeyError) else str(exc)
            return 400, {"error": reason}

    def _start(self, body: Body) -> dict[str, Any]:
        try:
            lane = Lane(body.get("lane", "standard"))
        except ValueError:
            raise InvalidArgument("lane", "must be light, standard or heavy") from None
        self.state.start(str(body["task_id"]), str(body["agent_version"]), lane)
        return {}

    def _finish(self, body: Body) -> dict[str, Any]:
        slow = body.get("slow")
        self.state.finish(
            str(body["task_id"]), str(body["outcome"]), None if slow is None else bool(slow)
        )
        return {}

    def _usage(self, body: Body) -> dict[str, Any]:
        usage = UsageReport(  # validates before the row becomes durable
            report_id="new",
            reservation_id=str(body["reservation_id"]),
            requests=int(body.get("requests", 1)),
            input_tokens=int(body.get("input_tokens", 0)),
            output_tokens=int(body.get("output_tokens", 0)),
            final=bool(body.get("final", False)),
            outcome=str(body.get("outcome", "")),
            duration_s=float(body.get("duration_s", 0.0)),
            agent_version=str(body.get("agent_version", "")),
        )
        return {"report_id": self.outbox.add(usage_to_proto(usage))}

    def _observations(self, body: Body) -> dict[str, Any]:
        headers = body.get("headers") or {}
        if not isinstance(headers, dict):
            raise InvalidArgument("headers", "must be an object of header name -> value")
        status = int(body.get("status", 200))
        observation = observation_from_headers({str(k): str(v) for k, v in headers.items()}, status)
        pool_id = str(body["pool_id"])
        self.state.observe(pool_id, observation)
        return {"pool_id": pool_id, "rate_limited": observation.rate_limited}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status, reply = await self._read_and_handle(reader)
                payload = json.dumps(reply).encode()
                head = (
                    f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                    "Connection: close\r\n\r\n"
                )
                writer.write(head.encode() + payload)
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # the worker went away; nothing to answer
        finally:
            writer.close()

    async def _read_and_handle(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
        request_line = (await reader.readline()).decode("latin-1").split()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip() or 0)
        if len(request_line) < 2 or not 0 <= length <= MAX_BODY:
            return 400, {"error": "(request): malformed or body too large"}
        body = await reader.readexactly(length)
        return self.handle(request_line[0], request_line[1], body)


def usage_to_proto(usage: UsageReport) -> agent_pb2.UsageReport:
    """The wire form kept in the outbox; ``report_id`` is left for the outbox to assign."""
    report = agent_pb2.UsageReport(
        reservation_id=usage.reservation_id,
        usage=common_pb2.Usage(
            requests=usage.requests,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
        ),
        final=usage.final,
        agent_version=usage.agent_version,
    )
    if usage.outcome:
        outcome = _OUTCOMES.get(usage.outcome)
        if outcome is None:
            raise InvalidArgument("outcome", f"unknown outcome {usage.outcome!r}")
        report.outcome = outcome
    if math.isfinite(usage.duration_s) and usage.duration_s > 0:
        report.duration.CopyFrom(duration_from_seconds(usage.duration_s))
    return report
