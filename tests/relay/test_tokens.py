"""Result tokens: HMAC-SHA256 of the task id, the same from every replica and every release."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from dispatcher.relay.tokens import TaskTokens

SECRET = b"0123456789abcdef0123456789abcdef"


def test_a_token_is_the_unpadded_urlsafe_hmac_sha256_of_the_task_id() -> None:
    """Replicas of different releases answer a retried Route alike only if the derivation
    never changes: pinned here against the standard library's one-shot HMAC."""
    tokens = TaskTokens(SECRET)
    for task_id in ("fam#" + "0" * 32, "é-task", ""):
        mac = hmac.digest(SECRET, task_id.encode(), hashlib.sha256)
        assert tokens.of(task_id) == base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def test_tokens_differ_by_task_and_by_secret_and_repeat_for_the_same_pair() -> None:
    tokens, other = TaskTokens(SECRET), TaskTokens(SECRET[::-1])
    assert tokens.of("a") == tokens.of("a") != tokens.of("b")
    assert tokens.of("a") != other.of("a")


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        TaskTokens(b"short")
