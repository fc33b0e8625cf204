"""Sticky sessions: keep, hand over (once per reboot), place with minimal disruption."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.routing.load import LoadEstimate
from dispatcher.routing.policies.rendezvous import rendezvous_order
from dispatcher.routing.sticky import Pin, StickyAction, decide_sticky
from dispatcher.routing.target import Target
from tests.routing.helpers import cluster, engine, request


def targets(*specs: tuple[str, int], boot: str = "b1") -> list[Target]:
    return [Target(cluster(cid, slots=slots, boot_id=boot), LoadEstimate()) for cid, slots in specs]


FLEET = (("a", 10), ("b", 10), ("c", 10))


def test_healthy_pin_is_kept() -> None:
    decision = decide_sticky("s1", Pin("b", "b1"), targets(*FLEET))
    assert (decision.action, decision.cluster_id, decision.handover_from) == (
        StickyAction.KEEP,
        "b",
        None,
    )


def test_pin_on_a_filtered_cluster_is_handed_over() -> None:
    decision = decide_sticky("s1", Pin("gone", "b1"), targets(*FLEET))
    assert decision.action is StickyAction.HANDOVER
    assert decision.handover_from == "gone"
    assert decision.cluster_id in {"a", "b", "c"}


def test_boot_id_change_hands_over_exactly_once() -> None:
    fleet = targets(*FLEET, boot="b2")
    first = decide_sticky("s1", Pin("b", "b1"), fleet)
    assert first.action is StickyAction.HANDOVER
    assert first.cluster_id != "b"
    stored = first.pin()
    assert stored is not None
    second = decide_sticky("s1", stored, fleet)
    assert (second.action, second.cluster_id) == (StickyAction.KEEP, first.cluster_id)


def test_engine_hands_over_from_a_draining_cluster() -> None:
    routing = engine(cluster("a", admin_state="drain", boot_id="x"), cluster("b", boot_id="y"))
    decision = routing.decide(request(session_key="s1"), 1.0, pin=Pin("a", "x", "llama"))
    assert (decision.cluster_id, decision.handover_from, decision.backend) == ("b", "a", "llama")


@settings(max_examples=50)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=40, unique=True))
def test_adding_a_cluster_moves_only_keys_to_the_new_cluster(keys: list[str]) -> None:
    before = targets(*FLEET)
    after = [*before, *targets(("new", 10))]
    for key in keys:
        old = rendezvous_order(key, before, bound=0)[0].cluster_id
        new = rendezvous_order(key, after, bound=0)[0].cluster_id
        assert new in (old, "new")


def test_rendezvous_shares_follow_weight() -> None:
    fleet = targets(("big", 30), ("small", 10))
    wins = sum(
        rendezvous_order(f"k{i}", fleet, bound=0)[0].cluster_id == "big" for i in range(4000)
    )
    assert 0.70 <= wins / 4000 <= 0.80


def test_bounded_load_skips_an_overloaded_favourite() -> None:
    fleet = targets(*FLEET)
    key = "session-7"
    favourite = rendezvous_order(key, fleet)[0]
    favourite.load.in_flight = 30
    assert rendezvous_order(key, fleet, bound=1.25)[0] is not favourite
