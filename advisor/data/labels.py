"""Weekly movement labels in FinGPT-Forecaster's bins.

A weekly return r (percent, from adjusted closes) falls in a bin by the ceiling of |r|:
``0 < |r| <= 1`` is "0-1%", ``1 < |r| <= 2`` is "1-2%", ... ``4 < |r| <= 5`` is "4-5%", ``|r| > 5`` is
"more than 5%". Direction is "up" for r >= 0 and "down" for r < 0: **an exactly-zero move is labelled
"Up by 0-1%"** (FinGPT's ``ret >= 0`` convention), which keeps every week labelled; with adjusted closes
to six decimals it is rare (it counts as "up" in binary accuracy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

MAX_BIN = 5  # bins 0-1 .. 4-5, then "more than 5%"


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"

    @property
    def sign(self) -> int:
        return 1 if self is Direction.UP else -1


@dataclass(frozen=True, order=True)
class MagnitudeBin:
    """A magnitude bin in percent; ``high is None`` means "more than ``low``%"."""

    low: int
    high: int | None

    def __post_init__(self) -> None:
        if self.high is None:
            if self.low != MAX_BIN:
                raise ValueError(f"open-ended bin must start at {MAX_BIN}")
        elif not (0 <= self.low < MAX_BIN and self.high == self.low + 1):
            raise ValueError(f"invalid bin {self.low}-{self.high}")

    @property
    def text(self) -> str:
        return f"more than {self.low}%" if self.high is None else f"{self.low}-{self.high}%"

    @property
    def midpoint(self) -> float:
        """Bin midpoint in percent; the open bin uses FinGPT's 5.5."""
        return self.low + 0.5

    @property
    def fingpt_value(self) -> float:
        """FinGPT's magnitude for MSE: lower bound + 0.5 ("more than 5%" = 5.5)."""
        return self.low + 0.5

    @classmethod
    def from_bounds(cls, low: int, high: int | None) -> MagnitudeBin:
        return cls(low, high)


ALL_BINS: tuple[MagnitudeBin, ...] = tuple(MagnitudeBin(i, i + 1) for i in range(MAX_BIN)) + (MagnitudeBin(MAX_BIN, None),)


def bin_for_return(return_pct: float) -> tuple[Direction, MagnitudeBin]:
    """Direction and bin of a weekly return given in percent."""
    if not math.isfinite(return_pct):
        raise ValueError(f"return must be finite, got {return_pct}")
    direction = Direction.UP if return_pct >= 0 else Direction.DOWN
    magnitude = abs(return_pct)
    index = max(math.ceil(magnitude), 1)  # 0 < |r| <= 1 (and exactly 0) -> bin 0-1
    if index > MAX_BIN:
        return direction, MagnitudeBin(MAX_BIN, None)
    return direction, MagnitudeBin(index - 1, index)


def label_text(direction: Direction, magnitude: MagnitudeBin) -> str:
    """The answer line the forecaster is trained to write, e.g. "Up by 1-2%"."""
    return f"{'Up' if direction is Direction.UP else 'Down'} by {magnitude.text}"


def signed_value(direction: Direction, magnitude: MagnitudeBin) -> float:
    """Signed FinGPT magnitude (percent), used for MSE and as the view's expected return."""
    return direction.sign * magnitude.fingpt_value
