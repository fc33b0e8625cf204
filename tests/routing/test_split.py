"""Smooth weighted round-robin: exact, interleaved shares; tripped backends get nothing."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from dispatcher.routing.split import SmoothWeighted


def test_ninety_ten_within_one_percent_over_ten_thousand_picks() -> None:
    split = SmoothWeighted([("llama", 90), ("gpt", 10)])
    counts = Counter(split.pick() for _ in range(10_000))
    assert abs(counts["llama"] / 10_000 - 0.90) <= 0.01
    assert abs(counts["gpt"] / 10_000 - 0.10) <= 0.01


def test_picks_are_interleaved_not_blocked() -> None:
    split = SmoothWeighted([("a", 90), ("b", 10)])
    picks = [split.pick() for _ in range(100)]
    gaps = [i for i, name in enumerate(picks) if name == "b"]
    assert len(gaps) == 10
    assert max(b - a for a, b in pairwise(gaps)) <= 10


def test_tripped_backend_gets_no_share_and_the_rest_renormalise() -> None:
    split = SmoothWeighted([("a", 60), ("b", 30), ("c", 10)])
    counts = Counter(split.pick(tripped={"a"}) for _ in range(4000))
    assert counts["a"] == 0
    assert counts["b"] == 3000
    assert counts["c"] == 1000


def test_everything_tripped_picks_nothing_and_zero_weight_is_never_picked() -> None:
    split = SmoothWeighted([("a", 1), ("z", 0)])
    assert split.pick(tripped={"a"}) is None
    assert {split.pick() for _ in range(10)} == {"a"}


@given(st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=6), st.integers(1, 4))
def test_each_full_cycle_gives_exact_weights(weights: list[int], cycles: int) -> None:
    split = SmoothWeighted([(f"b{i}", w) for i, w in enumerate(weights)])
    counts = Counter(split.pick() for _ in range(sum(weights) * cycles))
    assert counts == Counter({f"b{i}": w * cycles for i, w in enumerate(weights)})


def test_picks_on_a_copy_leave_the_original_sequence_as_it_was() -> None:
    """Explain picks on a copy, so dry runs never skew the real split."""
    split, twin = SmoothWeighted([("a", 90), ("b", 10)]), SmoothWeighted([("a", 90), ("b", 10)])
    for _ in range(7):
        split.pick()
        twin.pick()
    probe = split.copy()
    for _ in range(5):
        probe.pick()
    assert [split.pick() for _ in range(20)] == [twin.pick() for _ in range(20)]
