"""The worker SDK: how agent workers tell their regional agent what they are doing.

    from regional_agent import sdk

    sdk.report_start(task_id, "auditor@16.4", lane="heavy")
    response = client.chat.completions.with_raw_response.create(...)
    sdk.report_headers("azure-openai/eastus2/gpt-4o", response.headers, response.status_code)
    sdk.report_usage(reservation_id, requests=1, input_tokens=900, output_tokens=300)
    sdk.report_finish(task_id, "success")

Calls are synchronous and standard-library only, so any worker can use them; the agent's
address comes from ``$REGIONAL_AGENT_API`` (default ``127.0.0.1:8787``). A failed call
raises ``WorkerApiError``: usage must not be dropped silently.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

DEFAULT_ADDRESS = "127.0.0.1:8787"


class WorkerApiError(RuntimeError):
    """The regional agent refused the call or could not be reached."""


class WorkerClient:
    def __init__(self, address: str | None = None, timeout: float = 5.0) -> None:
        address = address or os.environ.get("REGIONAL_AGENT_API", DEFAULT_ADDRESS)
        self.base_url = f"http://{address}"
        self.timeout = timeout

    def report_start(self, task_id: str, agent_version: str, lane: str = "standard") -> None:
        self._post("/v1/tasks/start", task_id=task_id, agent_version=agent_version, lane=lane)

    def report_finish(self, task_id: str, outcome: str, slow: bool | None = None) -> None:
        """``outcome``: success, failure, timeout, cancelled or rate_limited."""
        body: dict[str, Any] = {"task_id": task_id, "outcome": outcome}
        if slow is not None:
            body["slow"] = slow
        self._post("/v1/tasks/finish", **body)

    def report_usage(
        self,
        reservation_id: str,
        *,
        requests: int = 1,
        input_tokens: int = 0,
        output_tokens: int = 0,
        final: bool = False,
        outcome: str = "",
        duration_s: float = 0.0,
        agent_version: str = "",
    ) -> str:
        """Usage since the previous call for this reservation; returns the outbox report id."""
        reply = self._post(
            "/v1/usage",
            reservation_id=reservation_id,
            requests=requests,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            final=final,
            outcome=outcome,
            duration_s=duration_s,
            agent_version=agent_version,
        )
        return str(reply["report_id"])

    def report_headers(self, pool_id: str, headers: Mapping[str, str], status: int = 200) -> None:
        """Rate-limit headers of one provider response (OpenAI, Azure OpenAI, Anthropic)."""
        self._post("/v1/observations", pool_id=pool_id, headers=dict(headers), status=status)

    def _post(self, path: str, **body: Any) -> dict[str, Any]:
        request = urllib.request.Request(
            self.base_url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply: dict[str, Any] = json.loads(response.read() or b"{}")
                return reply
        except urllib.error.HTTPError as exc:
            detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
            raise WorkerApiError(f"{path}: {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise WorkerApiError(f"{path}: regional agent unreachable: {exc}") from exc


_default: WorkerClient | None = None


def _client() -> WorkerClient:
    global _default
    if _default is None:
        _default = WorkerClient()
    return _default


def report_start(task_id: str, agent_version: str, lane: str = "standard") -> None:
    _client().report_start(task_id, agent_version, lane)


def report_finish(task_id: str, outcome: str, slow: bool | None = None) -> None:
    _client().report_finish(task_id, outcome, slow)


def report_usage(reservation_id: str, **usage: Any) -> str:
    return _client().report_usage(reservation_id, **usage)


def report_headers(pool_id: str, headers: Mapping[str, str], status: int = 200) -> None:
    _client().report_headers(pool_id, headers, status)
