"""Provider rate-limit headers, one table: every format, and unknown never becomes zero."""

from __future__ import annotations

import pytest

from regional_agent.headers import observation_from_headers, parse_go_duration

NOW = 1_750_000_000.0  # 2025-06-15T15:06:40Z
IN_30S = "2025-06-15T15:07:10Z"

CASES = [
    pytest.param(
        {
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-limit-tokens": "2000000",
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-remaining-tokens": "1999000",
            "x-ratelimit-reset-requests": "6m0s",
            "x-ratelimit-reset-tokens": "20ms",
        },
        200,
        {
            "limit_requests": 10000,
            "limit_tokens": 2_000_000,
            "remaining_requests": 9999,
            "remaining_tokens": 1_999_000,
            "reset_requests_s": 360.0,
            "reset_tokens_s": 0.02,
        },
        id="openai",
    ),
    pytest.param(
        {"X-RateLimit-Remaining-Tokens": "120", "X-RateLimit-Reset-Tokens": "1s"},
        200,
        {"remaining_tokens": 120, "reset_tokens_s": 1.0, "limit_tokens": None},
        id="openai-mixed-case",
    ),
    pytest.param(
        {"x-ratelimit-remaining-requests": "0", "retry-after-ms": "1500", "retry-after": "2"},
        429,
        {"remaining_requests": 0, "rate_limited": True, "retry_after_s": 1.5},
        id="azure-429-retry-after-ms-wins",
    ),
    pytest.param(
        {"x-ratelimit-remaining-tokens": "-1", "x-ratelimit-remaining-requests": "lots"},
        200,
        {"remaining_tokens": None, "remaining_requests": None},
        id="minus-one-and-junk-are-unknown",
    ),
    pytest.param(
        {"x-ratelimit-reset-tokens": "soon"},
        200,
        {"reset_tokens_s": None},
        id="unparsable-duration-is-unknown",
    ),
    pytest.param(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": IN_30S,
            "anthropic-ratelimit-tokens-limit": "40000",
            "anthropic-ratelimit-tokens-remaining": "39000",
            "anthropic-ratelimit-tokens-reset": "2025-06-15T15:06:00Z",
        },
        200,
        {
            "limit_requests": 50,
            "remaining_requests": 49,
            "reset_requests_s": 30.0,
            "limit_tokens": 40000,
            "remaining_tokens": 39000,
            "reset_tokens_s": 0.0,
        },
        id="anthropic",
    ),
    pytest.param(
        {"anthropic-ratelimit-requests-remaining": "0", "retry-after": "7"},
        429,
        {"remaining_requests": 0, "rate_limited": True, "retry_after_s": 7.0},
        id="anthropic-429",
    ),
    pytest.param(
        {"anthropic-ratelimit-tokens-reset": "tomorrow"},
        200,
        {"reset_tokens_s": None},
        id="anthropic-bad-reset-is-unknown",
    ),
    pytest.param(
        {"retry-after": "Sun, 15 Jun 2025 15:06:50 GMT"},
        429,
        {"rate_limited": True, "retry_after_s": 10.0},
        id="retry-after-http-date",
    ),
    pytest.param({"retry-after": "5"}, 200, {"retry_after_s": None}, id="retry-after-needs-429"),
    pytest.param({}, 200, {"limit_requests": None, "rate_limited": False}, id="no-headers"),
]


@pytest.mark.parametrize(("headers", "status", "expected"), CASES)
def test_headers_become_one_observation(
    headers: dict[str, str], status: int, expected: dict[str, object]
) -> None:
    observation = observation_from_headers(headers, status, observed_at=NOW)
    assert observation.observed_at == NOW
    for name, value in expected.items():
        assert getattr(observation, name) == pytest.approx(value), name


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6m0s", 360.0), ("1s", 1.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("", None), ("5", None)],
)
def test_go_durations(text: str, seconds: float | None) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)
