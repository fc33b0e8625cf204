"""Reservation records as the Lua scripts write them, read back into the model."""

from __future__ import annotations

import pytest

from dispatcher.ledger.model import NO_USAGE, Cost, ReservationState, Usage
from dispatcher.ledger.redis_codec import reservation_from_record, usage_of


def record(state: str, usage: dict[str, float]) -> dict[str, object]:
    return {
        "rid": "fam#" + "0" * 32, "req": "req-1", "ci": 1, "cid": "c2|gpt|v|light",
        "pools": ["fam/a"], "cost": {"fam/a": {"requests": 1, "tokens": 30}},
        "state": state, "exp": 160.5, "at": 100.5, "spill": "c1|gpt|v|light", "usage": usage,
    }  # fmt: skip


@pytest.mark.parametrize("state", [s.value for s in ReservationState])
def test_every_state_a_script_writes_reads_back(state: str) -> None:
    zero = {"requests": 0, "input_tokens": 0, "output_tokens": 0}
    res = reservation_from_record(record(state, zero), replayed=True)
    assert res.state is ReservationState(state)
    assert (res.candidate_index, res.spilled_from, res.replayed) == (1, "c1|gpt|v|light", True)
    assert res.cost == {"fam/a": Cost(requests=1.0, tokens=30.0)}
    assert res.usage is NO_USAGE


def test_reported_usage_is_read_and_nothing_reported_is_no_usage() -> None:
    assert usage_of({"requests": 1, "input_tokens": 12, "output_tokens": 0}) == Usage(1, 12, 0)
    assert usage_of({"requests": 0, "input_tokens": 0, "output_tokens": 5}) == Usage(0, 0, 5)
    assert usage_of({"requests": 0, "input_tokens": 0, "output_tokens": 0}) is NO_USAGE
    assert usage_of({}) is NO_USAGE


def test_a_state_no_script_writes_is_refused() -> None:
    with pytest.raises(KeyError):
        reservation_from_record(record("lost", {}))
