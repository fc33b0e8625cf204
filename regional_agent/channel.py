"""The agent's channel to the dispatcher: plaintext, TLS, or mutual TLS (its ``tls`` config).

With ``cert_file``/``key_file`` the agent presents a client certificate whose common name
must be its cluster id: the dispatcher lets a certificate report only for that cluster.
"""

from __future__ import annotations

import grpc

from regional_agent.config import AgentTls


def open_channel(target: str, tls: AgentTls | None) -> grpc.aio.Channel:
    if tls is None:
        return grpc.aio.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca_file.read_bytes() if tls.ca_file else None,
        private_key=tls.key_file.read_bytes() if tls.key_file else None,
        certificate_chain=tls.cert_file.read_bytes() if tls.cert_file else None,
    )
    return grpc.aio.secure_channel(target, credentials)
