"""Bearer-token credentials from gRPC metadata, for agents and operators.

Tokens are looked up by their SHA-256 digest: the server keeps no raw token in memory
after start, and a lookup's timing says nothing about how close a guess was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Literal

from dispatcher.errors import PermissionDenied, Unauthenticated
from dispatcher.rpc.handlers import Context
from dispatcher.rpc.tls import peer_common_name

Role = Literal["read", "admin"]
ROLE_RANK: Mapping[Role, int] = {"read": 0, "admin": 1}


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def bearer_token(context: Context) -> str | None:
    """The token of an ``authorization: Bearer <token>`` header, if the caller sent one."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class OperatorAuth:
    """Who may use the Admin API: a bearer token, or a verified client certificate whose
    common name is listed (mutual TLS). With neither configured every caller is an admin:
    the embedded default listens on loopback only."""

    def __init__(
        self,
        tokens: Mapping[str, tuple[str, Role]],
        certificates: Mapping[str, Role] | None = None,
    ) -> None:
        self._by_digest = {token_digest(t): (name, role) for name, (t, role) in tokens.items()}
        self._by_common_name = dict(certificates or {})

    @property
    def enabled(self) -> bool:
        return bool(self._by_digest or self._by_common_name)

    def _identify(self, context: Context) -> tuple[str, Role] | None:
        token = bearer_token(context)
        if token:
            return self._by_digest.get(token_digest(token))
        common_name = peer_common_name(context) if self._by_common_name else None
        role = self._by_common_name.get(common_name) if common_name else None
        return (common_name, role) if common_name and role else None

    def require(self, context: Context, role: Role) -> str:
        """The operator's name if its role allows ``role``; else the matching error."""
        if not self.enabled:
            return "anonymous"
        found = self._identify(context)
        if found is None:
            raise Unauthenticated(
                "a known operator token in 'authorization' (or a listed client certificate) "
                "is required"
            )
        name, granted = found
        if ROLE_RANK[granted] < ROLE_RANK[role]:
            raise PermissionDenied(f"operator {name!r} has the {granted} role; this needs {role}")
        return name
