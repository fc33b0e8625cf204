"""A private Redis speaking only TLS, for tests of ``rediss://`` URLs: a real ``redis-server``
on a free loopback port with the test PKI's server certificate (``tests/tls.py``), nothing
persisted.

``running(folder, pki)`` yields a :class:`TlsRedis`: the server's ``rediss://`` URL trusting
the test CA. The skip-or-fail policy for a missing or TLS-less ``redis-server`` lives in
``tests/conftest.py``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis

from tests.tls import Pki

START_DEADLINE_S = 20.0


@dataclass(frozen=True)
class TlsRedis:
    port: int
    ca_file: Path

    @property
    def url(self) -> str:
        """Database 0, verified against the test CA (its certificate names 127.0.0.1)."""
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={quote(str(self.ca_file))}"


def missing() -> str | None:
    """Why a TLS Redis cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    # A build without TLS refuses the tls-port directive; one with TLS gets as far as the
    # deliberately unknown directive after it and names that one instead. Nothing starts.
    probe = subprocess.run(
        ["redis-server", "--port", "0", "--tls-port", "0", "--no-such-directive", "1"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if "'tls-port" in probe.stdout + probe.stderr:
        return "this redis-server was built without TLS"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answering(tls: TlsRedis, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"TLS redis-server exited ({process.returncode}); see its log")
    client = redis.Redis.from_url(tls.url, socket_timeout=1.0)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


@contextmanager
def running(folder: Path, pki: Pki) -> Iterator[TlsRedis]:
    tls = TlsRedis(_free_port(), pki.ca)
    command = [
        "redis-server", "--port", "0", "--tls-port", str(tls.port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key),
        "--tls-ca-cert-file", str(pki.ca), "--tls-auth-clients", "no",
        "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "redis-tls.log",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while not _answering(tls, process):
            if time.monotonic() > deadline:
                raise RuntimeError(f"TLS redis-server on {tls.port} did not answer in time")
            time.sleep(0.05)
        yield tls
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
