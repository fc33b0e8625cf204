"""bench.route's pacing flags refuse values that would not pace (pure argument parsing)."""

from __future__ import annotations

import pytest

from bench import route, route_load


@pytest.mark.parametrize("value", ["0", "1.5", "-0.5", "nan"])
def test_light_load_outside_zero_to_one_is_refused_naming_the_flag(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        route.parse_args(["--light-load", value])
    assert "--light-load: must be in (0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_a_rate_that_is_not_finite_and_non_negative_is_refused(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        route_load.parse_args(["--target", "127.0.0.1:1", "--rate", value])
    assert "--rate: must be a finite rate >= 0" in capsys.readouterr().err


def test_sane_pacing_is_taken() -> None:
    assert route.parse_args(["--light-load", "0.5"]).light_load == 0.5
    assert route_load.parse_args(["--target", "h:1", "--rate", "600"]).rate == 600.0
