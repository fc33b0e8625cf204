"""The in-process handler bench, tiny: every pair routed and released on the real Redis
ledger through the servicer's own methods, the floor's beside them, and a refused call
counted, not swallowed."""

from __future__ import annotations

import grpc
import pytest

from bench import route_handlers


@pytest.mark.redis
async def test_every_pair_is_routed_and_released_on_the_redis_ledger(redis_db: str) -> None:
    args = route_handlers.parse_args(
        [
            *("--pairs", "64", "--rounds", "2", "--concurrency", "8", "--pin", "off"),
            "--redis-url",
            redis_db,
        ]
    )
    args.pinned = False
    result = await route_handlers.measure(args)
    assert (result["pairs"], result["errors"]) == (128, 0), result["error_samples"]
    assert 0 < result["handler_cpu_us_per_pair_best"] <= result["handler_cpu_us_per_pair"]
    # The floor's pairs ran too, without errors; its best round is one of its rounds.
    assert 0 < result["floor_cpu_us_per_pair_best"] <= result["floor_cpu_us_per_pair"]


async def test_a_refused_call_is_an_error_naming_its_status() -> None:
    class Refusing:
        async def Route(self, request: object, context: route_handlers.CallerContext) -> None:
            await context.abort_with_status(Status())

    class Status:
        code = grpc.StatusCode.INVALID_ARGUMENT
        details = "route: unknown"

    pairs = route_handlers.Pairs(Refusing())  # type: ignore[arg-type]
    await pairs.run(callers=2, pairs_each=1)
    assert pairs.errors == ["RuntimeError: INVALID_ARGUMENT: route: unknown"] * 2


def test_a_count_below_one_is_refused_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        route_handlers.parse_args(["--pairs", "0"])
    assert "--pairs: must be >= 1" in capsys.readouterr().err
