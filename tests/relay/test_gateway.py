"""The WebSocket gateway over a real socket, with the websockets client, on memory and Redis."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from dispatcher.relay.gateway import ResultGateway
from dispatcher.relay.model import EventKind, ResultStore

PROGRESS, FINAL = EventKind.PROGRESS, EventKind.FINAL


@pytest.fixture
async def gateway(store: ResultStore) -> AsyncIterator[ResultGateway]:
    gateway = ResultGateway(store, "127.0.0.1", 0, keepalive_interval=0.05)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


def url_of(gateway: ResultGateway, task_id: str, after: str = "") -> str:
    query = f"?after={after}" if after else ""
    return f"ws://127.0.0.1:{gateway.port}/v1/tasks/{task_id}/events{query}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def frames(ws: ClientConnection, *, keepalives: bool = False) -> list[dict[str, Any]]:
    """Every frame until the server closes the connection."""
    received = []
    try:
        async for message in ws:
            frame = json.loads(message)
            if keepalives or frame["kind"] != "keepalive":
                received.append(frame)
    except ConnectionClosed:
        pass
    return received


async def close_code(gateway: ResultGateway, path_task: str, **kwargs: Any) -> int | None:
    async with connect(url_of(gateway, path_task, kwargs.pop("after", "")), **kwargs) as ws:
        await frames(ws)
    return ws.close_code


async def test_a_stored_result_is_relayed_as_json_then_the_socket_closes(
    store: ResultStore, gateway: ResultGateway
) -> None:
    token = await store.register("t1")
    first = await store.publish("t1", PROGRESS, b"\x00\xff", "application/octet-stream", 1)
    final = await store.publish("t1", FINAL, '{"ok": "✓"}'.encode(), "application/json", 2)
    async with connect(url_of(gateway, "t1"), additional_headers=bearer(token)) as ws:
        received = await frames(ws)
    assert ws.close_code == 1000
    assert [f["event_id"] for f in received] == [first.event_id, final.event_id]
    assert received[0]["encoding"] == "base64"
    assert base64.b64decode(received[0]["payload"]) == b"\x00\xff"
    assert received[1] | {"published_at": None} == {
        "event_id": final.event_id,
        "kind": "final",
        "payload": '{"ok": "✓"}',
        "encoding": "utf-8",
        "content_type": "application/json",
        "published_at": None,
    }
    assert received[1]["published_at"].endswith("Z")


async def test_browsers_authenticate_with_the_bearer_subprotocol(
    store: ResultStore, gateway: ResultGateway
) -> None:
    token = await store.register("t1")
    await store.publish("t1", FINAL, b"done", "text/plain", 1)
    offered = ["dispatcher.v1", f"bearer.{token}"]
    async with connect(url_of(gateway, "t1"), subprotocols=offered) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "dispatcher.v1"  # never the token
        assert [f["payload"] for f in await frames(ws)] == ["done"]


async def test_a_client_that_disconnects_resumes_with_after_exactly_once(
    store: ResultStore, gateway: ResultGateway
) -> None:
    token = await store.register("t1")
    ids = [(await store.publish("t1", PROGRESS, b"x", "", s)).event_id for s in range(1, 4)]
    async with connect(url_of(gateway, "t1"), additional_headers=bearer(token)) as ws:
        seen = [json.loads(await ws.recv())["event_id"] for _ in range(2)]
    ids += [(await store.publish("t1", PROGRESS, b"x", "", s)).event_id for s in range(4, 6)]
    ids.append((await store.publish("t1", FINAL, b"x", "", 6)).event_id)
    resume = url_of(gateway, "t1", after=seen[-1])
    async with connect(resume, additional_headers=bearer(token)) as ws:
        seen += [f["event_id"] for f in await frames(ws)]
    assert seen == ids


async def test_keepalive_frames_flow_while_the_task_runs(
    store: ResultStore, gateway: ResultGateway
) -> None:
    token = await store.register("t1")
    async with connect(url_of(gateway, "t1"), additional_headers=bearer(token)) as ws:
        for _ in range(3):
            assert json.loads(await ws.recv()) == {"event_id": "", "kind": "keepalive"}
        await store.publish("t1", FINAL, b"", "", 1)
        assert [f["kind"] for f in await frames(ws)] == ["final"]


async def test_refusals_close_with_distinct_codes(
    store: ResultStore, gateway: ResultGateway
) -> None:
    token = await store.register("t1")
    last = (await store.publish("t1", PROGRESS, b"x", "", 1)).event_id
    future = last.split("-")[0] + "-99"
    assert await close_code(gateway, "t1", additional_headers=bearer("wrong")) == 4403
    assert await close_code(gateway, "t1") == 4401
    assert await close_code(gateway, "nope", additional_headers=bearer(token)) == 4404
    assert await close_code(gateway, "t1", after="bad", additional_headers=bearer(token)) == 4400
    assert await close_code(gateway, "t1", after=future, additional_headers=bearer(token)) == 4400


async def test_a_token_in_the_url_is_refused(store: ResultStore, gateway: ResultGateway) -> None:
    token = await store.register("t1")
    url = url_of(gateway, "t1") + f"?token={token}"
    async with connect(url, additional_headers=bearer(token)) as ws:
        await frames(ws)
    assert ws.close_code == 4400


async def test_unknown_paths_are_404_and_healthz_answers(gateway: ResultGateway) -> None:
    with pytest.raises(InvalidStatus) as caught:
        async with connect(f"ws://127.0.0.1:{gateway.port}/elsewhere"):
            pass
    assert caught.value.response.status_code == 404
    with pytest.raises(InvalidStatus) as caught:
        async with connect(f"ws://127.0.0.1:{gateway.port}/healthz"):
            pass
    assert caught.value.response.status_code == 200


async def test_past_max_connections_the_upgrade_is_refused(store: ResultStore) -> None:
    gateway = ResultGateway(store, "127.0.0.1", 0, max_connections=1)
    await gateway.start()
    try:
        token = await store.register("t1")
        async with connect(url_of(gateway, "t1"), additional_headers=bearer(token)):
            with pytest.raises(InvalidStatus) as caught:
                async with connect(url_of(gateway, "t1"), additional_headers=bearer(token)):
                    pass
        assert caught.value.response.status_code == 503
    finally:
        await gateway.stop()
