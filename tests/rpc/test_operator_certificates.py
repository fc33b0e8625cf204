"""Operators authenticated by their client certificate (mutual TLS) on the real server: the
certificate's common name carries the role, an unlisted one is refused, and a config that
lists certificates without mutual TLS is an error naming the field."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dispatcher.errors import ConfigError
from dispatcher.server import DispatcherServer
from dispatcher.v1 import admin_pb2, admin_pb2_grpc
from tests.rpc.conftest import embedded_config, running
from tests.tls import Pki, openssl_missing

pytestmark = pytest.mark.skipif(openssl_missing(), reason="needs the openssl command")
POOL = "openai/org-x"


@pytest.fixture
async def server(tmp_path: Path, pki: Pki) -> AsyncIterator[DispatcherServer]:
    overrides = {
        "tls.cert_file": str(pki.server_cert),
        "tls.key_file": str(pki.server_key),
        "tls.client_ca_file": str(pki.ca),
        "auth.operator_certificates": {"oncall": "admin", "viewer": "read"},
        "pools": [{"id": POOL, "tpm": 100_000}],
    }
    async with running(embedded_config(tmp_path, **overrides)) as server:
        yield server


def stub(channel: grpc.aio.Channel) -> Any:
    return admin_pb2_grpc.AdminServiceStub(channel)


def channel_as(server: DispatcherServer, pki: Pki, common_name: str) -> grpc.aio.Channel:
    cert, key = pki.client(common_name)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )
    return grpc.aio.secure_channel(server.address, credentials)


async def set_limit(channel: grpc.aio.Channel) -> admin_pb2.PoolQuota:
    request = admin_pb2.SetLimitsRequest(pool_id=POOL, limits={"tpm": 50_000})
    reply: admin_pb2.PoolQuota = await stub(channel).SetLimits(request)
    return reply


async def test_the_certificates_common_name_carries_the_role(
    server: DispatcherServer, pki: Pki
) -> None:
    async with channel_as(server, pki, "viewer") as viewer:
        quota = await stub(viewer).GetQuota(admin_pb2.GetQuotaRequest())
        assert [p.pool_id for p in quota.pools] == [POOL]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await set_limit(viewer)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with channel_as(server, pki, "oncall") as oncall:
        changed = await set_limit(oncall)
    tpm = next(d for d in changed.dimensions if d.name == "tpm")
    assert tpm.limit == 50_000


async def test_an_unlisted_certificate_is_refused(server: DispatcherServer, pki: Pki) -> None:
    async with channel_as(server, pki, "eu-west-1a") as agent_cert:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub(agent_cert).GetQuota(admin_pb2.GetQuotaRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_operator_certificates_without_mutual_tls_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        embedded_config(tmp_path, **{"auth.operator_certificates": {"oncall": "admin"}})
    assert "auth.operator_certificates" in str(raised.value)
    assert "tls.client_ca_file" in str(raised.value)


async def test_dispatchctl_authenticates_with_a_client_certificate(
    server: DispatcherServer, pki: Pki
) -> None:
    cert, key = pki.client("viewer")
    proc = await asyncio.create_subprocess_exec(
        shutil.which("dispatchctl") or "dispatchctl",
        *("--server", server.address, "--tls-ca", str(pki.ca)),
        *("--tls-cert", str(cert), "--tls-key", str(key), "-o", "json", "quota"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert [p["pool_id"] for p in json.loads(out)["pools"]] == [POOL]
