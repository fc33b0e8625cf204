"""The ``dispatcher`` command as a user runs it: start, answer, stop on SIGTERM, refuse bad input.

These run the real command in a subprocess; the server's JSON log tells the test which port
it bound, so no test guesses a free port or sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from dispatcher.event_loop import default_loop_name, uvloop_available
from dispatcher.rpc.health_client import check_health
from tests.serving import dispatcher_cmd, serving, serving_line, sqlite_url


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    with serving("--database-url", sqlite_url(tmp_path)) as running:
        yield running


async def test_serve_answers_health_then_exits_zero_on_sigterm(
    served: tuple[subprocess.Popen[str], str],
) -> None:
    proc, address = served
    async with grpc.aio.insecure_channel(address) as channel:
        assert await check_health(channel) == "SERVING"
    proc.send_signal(signal.SIGTERM)
    # The default grace period is 10 s; an idle server must exit well within it.
    assert proc.wait(timeout=10) == 0
    assert proc.stderr is not None
    events = [json.loads(line)["event"] for line in proc.stderr if line.startswith("{")]
    assert "shutdown_requested" in events
    assert "stopped" in events


def run_cli(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        dispatcher_cmd(*args), capture_output=True, text=True, timeout=timeout, check=False
    )


BAD_CONFIGS = [
    (
        "unknown field",
        "pools:\n  - id: p\n    tpm: 10\n    colour: red\n",
        "pools[0].colour",
        "unknown field",
    ),
    ("wrong type", "pools:\n  - id: p\n    tpm: lots\n", "pools[0].tpm", "number"),
    ("negative limit", "pools:\n  - id: p\n    tpm: -5\n", "pools[0].tpm", ">= 0"),
    (
        "duplicate cluster id",
        "clusters:\n  - id: eu-1\n  - id: eu-1\n",
        "clusters[1].id",
        "duplicate",
    ),
]


@pytest.mark.parametrize("choice", [None, "asyncio", "uvloop"])
def test_serve_runs_on_the_event_loop_the_environment_names(
    tmp_path: Path, choice: str | None
) -> None:
    if choice == "uvloop" and not uvloop_available():
        pytest.skip("uvloop is not installed here")
    env = {k: v for k, v in os.environ.items() if k != "DISPATCHER_EVENT_LOOP"}
    if choice:
        env["DISPATCHER_EVENT_LOOP"] = choice
    cmd = dispatcher_cmd("serve", "--listen", "127.0.0.1:0", "--log-format", "json")
    cmd += ["--database-url", sqlite_url(tmp_path)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert serving_line(proc)["event_loop"] == (choice or default_loop_name())
    finally:
        proc.kill()
        proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()


@pytest.mark.parametrize(
    ("case", "text", "field", "reason"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_exits_2_with_one_line_naming_file_field_and_reason(
    tmp_path: Path, case: str, text: str, field: str, reason: str
) -> None:
    config = tmp_path / "dispatcher.yaml"
    config.write_text(text)
    result = run_cli("serve", "--config", str(config), "--database-url", sqlite_url(tmp_path))
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(config) in lines[0]
    assert field in lines[0]
    assert reason in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = run_cli("serve", "--config", str(missing))
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert "not found" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("flag", "url", "backend"),
    [
        ("--redis-url", "redis://127.0.0.1:1/0", "redis"),
        ("--database-url", "postgresql+asyncpg://postgres:s3cret@127.0.0.1:1/test", "database"),
    ],
)
def test_unreachable_backend_fails_fast_with_one_line(
    tmp_path: Path, flag: str, url: str, backend: str
) -> None:
    args = ["serve", "--listen", "127.0.0.1:0", flag, url]
    if flag != "--database-url":
        args += ["--database-url", sqlite_url(tmp_path)]
    # run_cli's timeout turns a hang into a failure; the connect timeout is 3 s.
    result = run_cli(*args)
    assert result.returncode == 2, result
    assert f"{backend} unavailable" in result.stderr
    assert "s3cret" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_gateway_on_the_memory_store_exits_2_pointing_at_serve() -> None:
    """memory:// results live inside one serve process; a separate gateway would see none."""
    result = run_cli("gateway", "--listen", "127.0.0.1:0")
    assert result.returncode == 2, result
    assert "hot_store.url" in result.stderr
    assert "serve --with-gateway" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
