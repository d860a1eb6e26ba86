"""Opposite profiles must want different views: the share of view pairs they rank differently, on real weeks.

Over every pair of the 12 predicted bins in real bundle weeks, the conservative and the aggressive
archetype must disagree on at least 25% of the pairs both of them label. Plain mean-variance (loss
aversion 1 for both, the utility before) is the control: it disagrees on well under 1%.
"""

from __future__ import annotations

from datetime import date

from advisor.data.store import PreloadedMarketStore
from rlhf.profiles import ARCHETYPES, score_answers
from rlhf.utility import UserUtility, bundle_weeks, disagreement


def test_opposite_profiles_disagree_on_a_quarter_of_labelled_pairs(real_db) -> None:
    cautious, bold = score_answers(ARCHETYPES["conservative"]), score_answers(ARCHETYPES["aggressive"])
    with real_db() as session:
        store = PreloadedMarketStore(session)
        weeks = list(bundle_weeks(store, store.tickers()[::8], date(2012, 9, 1), date(2015, 9, 30)))
    assert len(weeks) > 1500, "every week of a sample of the bundle's tickers"
    product = disagreement(weeks, cautious.utility, bold.utility)
    control = disagreement(weeks, UserUtility(cautious.params), UserUtility(bold.params))
    assert product.labelled_by_both > 40_000
    assert product.share >= 0.25, product.to_json()
    assert control.share < 0.01, control.to_json()
