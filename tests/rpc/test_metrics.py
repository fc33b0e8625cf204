"""Prometheus metrics over HTTP from a running server."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from dispatcher.server import DispatcherServer
from tests.rpc.conftest import embedded_config


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        body = reply.read().decode()
    return {
        family.name: [(sample.labels, sample.value) for sample in family.samples]
        for family in text_string_to_metric_families(body)
    }


async def test_pool_remaining_and_journal_lag_are_exported(tmp_path: Path) -> None:
    config = embedded_config(
        tmp_path,
        pools=[{"id": "openai/org-x", "tpm": 100_000}],
        **{"server.metrics_listen": "127.0.0.1:0"},
    )
    server = DispatcherServer(config)
    await server.start()
    try:
        assert server.metrics_port is not None
        # Refresh now rather than waiting for the background loop's next turn.
        await server.runtime.metrics.refresh(server.runtime)
        families = await asyncio.to_thread(scrape, server.metrics_port)
        remaining = {
            labels["dim"]: value
            for labels, value in families["dispatcher_pool_remaining"]
            if labels["pool"] == "openai/org-x"
        }
        assert remaining["tpm"] == 90_000  # limit x the default safety factor 0.9
        assert families["dispatcher_journal_pending"] == [({}, 0.0)]
        assert "dispatcher_decisions" in families
    finally:
        await server.stop(grace=0)
