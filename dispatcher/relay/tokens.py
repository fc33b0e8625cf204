"""Result tokens every replica derives alike: ``HMAC-SHA256(secret, task_id)``.

A retried Route must return the same token as the first try (it is idempotent), whichever
replica answers it, and no replica keeps a token it handed out: the store keeps only the
token's digest. So the token is a function of the task id under a secret the replicas share —
``relay.token_secret`` from the config, or else one random secret that the first replica to
start stores in the hot store (``SET NX``) and every other replica reads.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from dispatcher.redis_client import AnyRedis

SECRET_KEY = "dsp:relay:token-secret"


class TaskTokens:
    """``tokens.of(task_id)`` -> the task's result token."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("a token secret needs at least 16 bytes")
        self._keyed = hmac.new(secret, digestmod=hashlib.sha256)

    def of(self, task_id: str) -> str:
        # A copy of an HMAC already keyed, rather than hmac.digest: the one-shot call looks
        # the digest up and sets the key again on every call, which on the Route path (its
        # caches cold) cost 11 us a token against 2 here.
        mac = self._keyed.copy()
        mac.update(task_id.encode())
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


async def shared_secret(configured: str | None, redis: AnyRedis | None) -> bytes:
    """The configured secret; else the hot store's (created once); else, for the
    single-process embedded system, a fresh random one."""
    if configured:
        return configured.encode()
    if redis is None:
        return secrets.token_bytes(32)
    candidate = secrets.token_urlsafe(32)
    # SET NX GET (Redis >= 7): one atomic step that answers the secret that was there first.
    stored = await redis.set(SECRET_KEY, candidate, nx=True, get=True)
    if stored is None:
        return candidate.encode()
    return stored if isinstance(stored, bytes) else str(stored).encode()
