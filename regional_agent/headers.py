"""Provider rate-limit headers → one :class:`~dispatcher.ledger.model.Observation`.

Formats understood (header names are case-insensitive):

- OpenAI: ``x-ratelimit-{limit,remaining}-{requests,tokens}`` and
  ``x-ratelimit-reset-{requests,tokens}`` as Go durations (``6m0s``, ``1s``, ``20ms``).
- Azure OpenAI: the same ``x-ratelimit-remaining-*`` names (no limits or resets), plus
  ``retry-after-ms`` on 429s.
- Anthropic: ``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``, resets as
  RFC 3339 timestamps; ``retry-after`` in whole seconds.

A value that is missing, ``-1`` or unparsable is unknown (None), never zero: the ledger must
not block a pool because a header was garbled (DESIGN §7.3).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime

from dispatcher.ledger.model import Observation

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_go_duration(text: str) -> float | None:
    """Seconds from ``6m0s`` / ``1s`` / ``20ms`` / ``1h2m3.5s``; None if not that shape."""
    text = text.strip()
    if not text or _GO_DURATION.sub("", text):
        return None
    return sum(float(n) * _UNIT[unit] for n, unit in _GO_DURATION.findall(text))


def parse_count(text: str | None) -> float | None:
    """A non-negative count; ``-1``, negatives, NaN and junk are unknown."""
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def seconds_until(text: str | None, now: float) -> float | None:
    """Seconds from ``now`` to an RFC 3339 time (Anthropic resets); past times give 0."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - now)


def retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """``retry-after-ms`` (Azure) wins over ``retry-after`` (seconds or an HTTP date)."""
    if (ms := parse_count(headers.get("retry-after-ms"))) is not None:
        return ms / 1000
    text = headers.get("retry-after")
    if text is None:
        return None
    if (seconds := parse_count(text)) is not None:
        return seconds
    try:
        return max(0.0, parsedate_to_datetime(text).timestamp() - now)
    except (TypeError, ValueError, IndexError):
        return None


def observation_from_headers(
    headers: Mapping[str, str], status: int = 200, observed_at: float | None = None
) -> Observation:
    """One observation from one provider response's headers and HTTP status."""
    now = time.time() if observed_at is None else observed_at
    h = {key.lower(): value for key, value in headers.items()}
    if any(key.startswith("anthropic-ratelimit-") for key in h):
        fields = _anthropic(h, now)
    else:
        fields = _openai(h)
    rate_limited = status == 429
    return Observation(
        observed_at=now,
        rate_limited=rate_limited,
        retry_after_s=retry_after(h, now) if rate_limited else None,
        **fields,
    )


def _openai(h: Mapping[str, str]) -> dict[str, float | None]:
    def reset(kind: str) -> float | None:
        text = h.get(f"x-ratelimit-reset-{kind}")
        return parse_go_duration(text) if text is not None else None

    return {
        "limit_requests": parse_count(h.get("x-ratelimit-limit-requests")),
        "remaining_requests": parse_count(h.get("x-ratelimit-remaining-requests")),
        "reset_requests_s": reset("requests"),
        "limit_tokens": parse_count(h.get("x-ratelimit-limit-tokens")),
        "remaining_tokens": parse_count(h.get("x-ratelimit-remaining-tokens")),
        "reset_tokens_s": reset("tokens"),
    }


def _anthropic(h: Mapping[str, str], now: float) -> dict[str, float | None]:
    def get(kind: str, what: str) -> str | None:
        return h.get(f"anthropic-ratelimit-{kind}-{what}")

    return {
        "limit_requests": parse_count(get("requests", "limit")),
        "remaining_requests": parse_count(get("requests", "remaining")),
        "reset_requests_s": seconds_until(get("requests", "reset"), now),
        "limit_tokens": parse_count(get("tokens", "limit")),
        "remaining_tokens": parse_count(get("tokens", "remaining")),
        "reset_tokens_s": seconds_until(get("tokens", "reset"), now),
    }
