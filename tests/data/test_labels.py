"""FinGPT bins for weekly moves."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from advisor.data.labels import ALL_BINS, Direction, MagnitudeBin, bin_for_return, label_text, signed_value


@pytest.mark.parametrize(
    ("ret", "expected"),
    [
        (0.0, "Up by 0-1%"),
        (0.3, "Up by 0-1%"),
        (1.0, "Up by 0-1%"),
        (1.0001, "Up by 1-2%"),
        (-0.2, "Down by 0-1%"),
        (-4.99, "Down by 4-5%"),
        (5.0, "Up by 4-5%"),
        (5.01, "Up by more than 5%"),
        (-12.0, "Down by more than 5%"),
    ],
)
def test_bins(ret: float, expected: str) -> None:
    assert label_text(*bin_for_return(ret)) == expected


@given(st.floats(min_value=-50, max_value=50, allow_nan=False))
def test_every_return_falls_in_exactly_one_bin(ret: float) -> None:
    direction, magnitude = bin_for_return(ret)
    assert magnitude in ALL_BINS
    assert direction is (Direction.UP if ret >= 0 else Direction.DOWN)
    size = abs(ret)
    if magnitude.high is None:
        assert size > 5
    else:
        assert magnitude.low <= size <= magnitude.high or (size == 0 and magnitude.low == 0)
    assert math.copysign(1, signed_value(direction, magnitude)) == direction.sign


def test_fingpt_values_and_invalid_bins() -> None:
    assert signed_value(Direction.DOWN, MagnitudeBin(2, 3)) == -2.5
    assert signed_value(Direction.UP, MagnitudeBin(5, None)) == 5.5
    with pytest.raises(ValueError):
        MagnitudeBin(2, 4)
    with pytest.raises(ValueError):
        bin_for_return(float("nan"))
