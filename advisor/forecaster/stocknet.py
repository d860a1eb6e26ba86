"""The stocknet (Xu & Cohen, ACL 2018) daily movement protocol, so results compare with its table.

Label: next-day adjusted-close return; up if > 0.55%, down if < -0.5%, other days dropped. Input: the
previous 5 trading days of prices and tweets (:meth:`WindowConfig.daily`). Periods below; the offline
bundle stops before the test period, so its dev period is what can be reported here — the code takes
any bundle, and a bundle that covers the test period reproduces the comparison.
"""

from __future__ import annotations

from datetime import date

STOCKNET_PERIODS = {
    "train": (date(2014, 1, 1), date(2015, 8, 1)),
    "dev": (date(2015, 8, 1), date(2015, 10, 1)),
    "test": (date(2015, 10, 1), date(2016, 1, 1)),
}
STOCKNET_PUBLISHED = {"accuracy": 0.5823, "mcc": 0.081}
UP_THRESHOLD_PCT = 0.55
DOWN_THRESHOLD_PCT = -0.5


def stocknet_keeps(return_pct: float) -> bool:
    """Days that moved up more than 0.55% or down more than 0.5% are kept; the rest are dropped."""
    return return_pct > UP_THRESHOLD_PCT or return_pct < DOWN_THRESHOLD_PCT
