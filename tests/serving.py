"""Running the real ``dispatcher`` command in a subprocess, as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

START_TIMEOUT_S = 30.0


def dispatcher_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "dispatcher", *args]


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'ledger.sqlite3'}"


def wait_for_serving(proc: subprocess.Popen[str]) -> str:
    """Read the JSON log until the ``serving`` line; return the address it names."""
    return str(serving_line(proc)["address"])


def serving_line(proc: subprocess.Popen[str]) -> dict[str, object]:
    """Read the JSON log until the ``serving`` line and return it."""
    assert proc.stderr is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("event") == "serving":
            return event
    proc.kill()
    raise AssertionError(f"server did not report serving; stderr: {''.join(seen)}")


@contextmanager
def serving(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``dispatcher serve ARGS`` on an ephemeral port with JSON logs; yields (proc, address)."""
    proc = subprocess.Popen(
        dispatcher_cmd("serve", "--listen", "127.0.0.1:0", "--log-format", "json", *args),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, wait_for_serving(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
