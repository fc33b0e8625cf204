"""A private 3-primary Redis Cluster for tests: real ``redis-server`` processes on free
loopback ports in a temporary directory, nothing persisted, killed afterwards.

``running(folder)`` yields a ``redis+cluster://`` URL naming every primary as a seed node.
The skip-or-fail policy for a missing ``redis-server`` lives in ``tests/conftest.py``.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

PRIMARIES = 3
#: Quota families whose hash tags land on different primaries (``--cluster create`` gives
#: each of the three nodes a third of the slots, in order); tests still check the spread.
SPREAD_FAMILIES = ("bedrock/claude", "azure/gpt-4o", "openai/gpt-4o", "mistral/large")
START_DEADLINE_S = 20.0
START_ATTEMPTS = 3
BUS_OFFSET = 10_000  # Redis Cluster's bus port is the client port + 10000
#: Client ports, so that bus ports stay below Linux's ephemeral range (32768+): a port taken
#: by some outgoing connection between our check and the server's bind is a start failure.
PORT_RANGE = (12_000, 22_000)


def missing_binaries() -> list[str]:
    return [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """Ports whose cluster bus port is free too (so port 0 cannot be used: it knows only one)."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(*PORT_RANGE)
        if port not in ports and _bindable(port) and _bindable(port + BUS_OFFSET):
            ports.append(port)
    return ports


def _cli(port: int, *args: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return done.stdout + done.stderr


def _wait_until(ready: Callable[[], bool], what: str, deadline: float) -> None:
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis Cluster: timed out waiting for {what}")
        time.sleep(0.05)


class NodeDidNotStart(RuntimeError):
    """A node exited at start (its port was taken meanwhile): worth a try on other ports."""


def _start(folder: Path, port: int) -> subprocess.Popen[bytes]:
    command = [
        "redis-server", "--port", str(port), "--cluster-enabled", "yes",
        "--cluster-config-file", f"nodes-{port}.conf", "--save", "", "--appendonly", "no",
        "--bind", "127.0.0.1", "--daemonize", "no", "--logfile", f"redis-{port}.log",
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL)


def _answering(port: int, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise NodeDidNotStart(f"redis-server on {port} exited ({process.returncode})")
    return "PONG" in _cli(port, "PING")


def _nodes(folder: Path, deadline: float) -> tuple[list[int], list[subprocess.Popen[bytes]]]:
    """Ports and processes of nodes that answer PING, trying other ports if one cannot bind."""
    for attempt in range(1, START_ATTEMPTS + 1):
        ports = free_ports(PRIMARIES)
        processes = [_start(folder, port) for port in ports]
        try:
            for port, process in zip(ports, processes, strict=True):
                _wait_until(lambda p=port, q=process: _answering(p, q), f"PING on {port}", deadline)
            return ports, processes
        except NodeDidNotStart:
            _stop(processes)
            if attempt == START_ATTEMPTS:
                raise
        except BaseException:
            _stop(processes)
            raise
    raise AssertionError("unreachable")


def _create(ports: list[int], deadline: float) -> None:
    nodes = [f"127.0.0.1:{p}" for p in ports]
    out = _cli(ports[0], "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes")
    if "[OK] All 16384 slots covered" not in out:
        raise RuntimeError(f"redis-cli --cluster create failed:\n{out}")
    for port in ports:
        _wait_until(
            lambda p=port: "cluster_state:ok" in _cli(p, "CLUSTER", "INFO"),
            f"cluster_state:ok on {port}",
            deadline,
        )


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running(folder: Path) -> Iterator[str]:
    """Start the cluster in ``folder``; yield its URL; kill every node on exit."""
    deadline = time.monotonic() + START_DEADLINE_S
    ports, processes = _nodes(folder, deadline)
    try:
        _create(ports, deadline)
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    finally:
        _stop(processes)


@contextmanager
def flushed(url: str) -> Iterator[None]:
    """Every primary of the cluster at ``url`` empty before and after the block."""
    ports = [int(seed.rpartition(":")[2]) for seed in url.partition("//")[2].split(",")]

    def flush() -> None:
        for port in ports:
            with redis.Redis(port=port) as node:
                node.flushall()

    flush()
    try:
        yield
    finally:
        flush()
