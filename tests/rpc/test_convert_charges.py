"""``convert.add_charges``: the per-pool charges Route, Release and Settle answer with (pure)."""

from __future__ import annotations

from dispatcher.ledger import Cost
from dispatcher.rpc.convert import add_charges
from dispatcher.v1 import routing_pb2


def charges(costs: dict[str, Cost], sign: float = 1.0) -> list[tuple[str, tuple[int, ...]]]:
    response = routing_pb2.ReleaseResponse()
    add_charges(response.refunded, costs, sign)
    return [
        (c.pool_id, (c.cost.requests, c.cost.tokens, c.cost.input_tokens, c.cost.output_tokens))
        for c in response.refunded
    ]


def test_one_charge_per_pool_in_pool_order_with_whole_numbers() -> None:
    costs = {"b/pool": Cost(1.0, 1500.4, 1000.0, 500.6), "a/pool": Cost(1.0, 12.0, 10.0, 2.0)}
    assert charges(costs) == [("a/pool", (1, 12, 10, 2)), ("b/pool", (1, 1500, 1000, 501))]


def test_a_pool_charged_nothing_is_left_out() -> None:
    assert charges({"a/pool": Cost(), "b/pool": Cost(tokens=3.0)}) == [("b/pool", (0, 3, 0, 0))]


def test_the_sign_flips_a_cost_and_a_dimension_it_makes_negative_is_charged_nothing() -> None:
    # Settle's refund is the negated adjustment: pools charged more than held refund nothing.
    adjustment = {"a/pool": Cost(0.0, -40.0, -40.0, 0.0), "b/pool": Cost(0.0, 25.0, 5.0, 20.0)}
    assert charges(adjustment, sign=-1.0) == [("a/pool", (0, 40, 40, 0))]
    mixed = {"a/pool": Cost(1.0, -5.0, 2.0, -7.0)}
    assert charges(mixed) == [("a/pool", (1, 0, 2, 0))]
