"""Test certificates made with the ``openssl`` command: a CA, a server certificate for
127.0.0.1 / localhost, and client certificates whose common name is a cluster id."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    folder: Path

    def client(self, common_name: str) -> tuple[Path, Path]:
        """(cert, key) of a client certificate for ``common_name``, signed by the CA."""
        cert, key = self.folder / f"{common_name}.crt", self.folder / f"{common_name}.key"
        if not cert.exists():
            _signed(self.folder, common_name, cert, key, extensions=None)
        return cert, key


def openssl_missing() -> bool:
    return shutil.which("openssl") is None


def _run(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _signed(folder: Path, name: str, cert: Path, key: Path, extensions: str | None) -> None:
    csr = folder / f"{name}.csr"
    _run("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
         "-keyout", str(key), "-out", str(csr))  # fmt: skip
    sign = ["x509", "-req", "-in", str(csr), "-CA", str(folder / "ca.crt"),
            "-CAkey", str(folder / "ca.key"), "-CAcreateserial", "-days", "2",
            "-out", str(cert)]  # fmt: skip
    if extensions is not None:
        ext = folder / f"{name}.ext"
        ext.write_text(extensions)
        sign += ["-extfile", str(ext)]
    _run(*sign)


def make_pki(folder: Path) -> Pki:
    _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
         "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.crt"))  # fmt: skip
    cert, key = folder / "server.crt", folder / "server.key"
    _signed(folder, "server", cert, key, "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    return Pki(folder / "ca.crt", cert, key, folder)
