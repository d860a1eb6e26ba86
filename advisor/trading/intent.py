"""The one typed definition of an order's ``intent`` (the JSON column on ``orders``): what the bot meant
when it wrote the order, and what a broker added when it accepted it.

Written by the bot before an order is sent (so a crash leaves a record of the plan), read by the
safety caps (today's notional) and by the local paper broker (the quantity it fills)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class OrderIntent(BaseModel):
    # Reading never fails on a key this version does not know (a row from another version): it is ignored.
    model_config = ConfigDict(extra="ignore", frozen=True)

    target_weight: float | None = None  # the name's weight in the plan
    price_ref: float | None = None  # the price the plan sized the order at
    current_qty: float | None = None  # the position when the plan was made
    notional_estimate: float = 0.0  # qty x price_ref: what the daily cap counts
    adopted: bool = False  # found at the broker rather than written by the bot first
    broker_qty: float | None = None  # the quantity the local paper broker accepted (a notional order's shares)

    @classmethod
    def load(cls, raw: dict[str, Any] | None) -> OrderIntent:
        return cls.model_validate(raw or {})

    def dump(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)
