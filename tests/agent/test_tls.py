"""TLS and mutual TLS on the real server: an agent's certificate names the one cluster it
may report for, a peer without one is refused at the handshake, and the regional agent's own
channel and probe speak TLS from its config."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from dispatcher.server import DispatcherServer
from dispatcher.v1 import agent_pb2_grpc
from regional_agent.channel import open_channel
from regional_agent.cli import dispatcher_serving
from regional_agent.config import AgentTls
from tests.agent.conftest import announce_report
from tests.rpc.conftest import embedded_config, running
from tests.tls import Pki, openssl_missing

pytestmark = pytest.mark.skipif(openssl_missing(), reason="needs the openssl command")


@pytest.fixture
async def mtls_server(tmp_path: Path, pki: Pki) -> AsyncIterator[DispatcherServer]:
    overrides = {
        "tls.cert_file": str(pki.server_cert),
        "tls.key_file": str(pki.server_key),
        "tls.client_ca_file": str(pki.ca),
    }
    async with running(embedded_config(tmp_path, **overrides)) as server:
        yield server


def agent_tls(pki: Pki, cluster_id: str | None) -> AgentTls:
    if cluster_id is None:
        return AgentTls(ca_file=pki.ca)
    cert, key = pki.client(cluster_id)
    return AgentTls(ca_file=pki.ca, cert_file=cert, key_file=key)


async def test_a_certificate_reports_for_its_own_cluster_only(
    mtls_server: DispatcherServer, pki: Pki
) -> None:
    async with open_channel(mtls_server.address, agent_tls(pki, "c1")) as channel:
        own = agent_pb2_grpc.AgentServiceStub(channel).Connect()
        await own.write(announce_report("c1"))
        assert (await own.read()).ack.seq == 1
        await own.done_writing()
        other = agent_pb2_grpc.AgentServiceStub(channel).Connect()
        await other.write(announce_report("c2"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await other.read()
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert [s.id for s in await mtls_server.runtime.registry.list()] == ["c1"]


async def test_a_peer_without_a_client_certificate_is_refused(
    mtls_server: DispatcherServer, pki: Pki
) -> None:
    async with open_channel(mtls_server.address, agent_tls(pki, None)) as channel:
        stream = agent_pb2_grpc.AgentServiceStub(channel).Connect()

        async def announce_and_read() -> None:
            await stream.write(announce_report("c1"))
            await stream.read()

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await announce_and_read()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_plaintext_client_cannot_talk_to_a_tls_port(
    mtls_server: DispatcherServer,
) -> None:
    assert not await dispatcher_serving(mtls_server.address, timeout=2.0)


async def test_the_agent_probe_speaks_tls_from_its_config(
    mtls_server: DispatcherServer, pki: Pki
) -> None:
    assert await dispatcher_serving(mtls_server.address, 5.0, agent_tls(pki, "c1"))
