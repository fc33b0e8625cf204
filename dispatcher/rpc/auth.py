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
    """Who may use the Admin API. With no tokens configured every caller is an admin:
    the embedded default listens on loopback only."""

    def __init__(self, tokens: Mapping[str, tuple[str, Role]]) -> None:
        self._by_digest = {token_digest(t): (name, role) for name, (t, role) in tokens.items()}

    @property
    def enabled(self) -> bool:
        return bool(self._by_digest)

    def require(self, context: Context, role: Role) -> str:
        """The operator's name if its role allows ``role``; else the matching error."""
        if not self.enabled:
            return "anonymous"
        token = bearer_token(context)
        found = self._by_digest.get(token_digest(token)) if token else None
        if found is None:
            raise Unauthenticated("a known operator token is required in 'authorization'")
        name, granted = found
        if ROLE_RANK[granted] < ROLE_RANK[role]:
            raise PermissionDenied(f"operator {name!r} has the {granted} role; this needs {role}")
        return name
