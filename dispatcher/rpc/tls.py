"""TLS for the gRPC port (DESIGN §9): server credentials from ``tls`` config, and who the
peer's verified client certificate says it is.

With ``tls.client_ca_file`` set the server requires a client certificate signed by that CA
(mutual TLS); the certificate's common name is then the identity of the caller, e.g. the
cluster id a regional agent may report for.
"""

from __future__ import annotations

import grpc

from dispatcher.config import TlsConfig
from dispatcher.rpc.handlers import Context

CN_PROPERTY = "x509_common_name"


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    if tls.cert_file is None or tls.key_file is None:
        raise ValueError("TLS needs tls.cert_file and tls.key_file")
    ca = tls.client_ca_file.read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


def peer_common_name(context: Context) -> str | None:
    """The verified client certificate's common name, or None (no mutual TLS)."""
    names = list(context.auth_context().get(CN_PROPERTY) or ())
    return names[0].decode() if names else None
