"""Portfolio construction: hard limits hold whatever the views say (property-based)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advisor.errors import ConfigError
from advisor.portfolio import PRESETS, RiskParams, exposures, target_weights, trailing_daily_volatility

TOL = 1e-9

views_strategy = st.dictionaries(
    st.sampled_from([f"T{i}" for i in range(12)]),
    st.one_of(st.none(), st.floats(min_value=-50, max_value=50, allow_nan=False), st.just(float("nan")), st.just(float("inf"))),
    min_size=0, max_size=12,
)
vol_strategy = st.one_of(st.none(), st.floats(min_value=0, max_value=0.2), st.just(float("nan")))
params_strategy = st.builds(
    RiskParams,
    risk_aversion=st.floats(min_value=0.01, max_value=100),
    max_weight=st.floats(min_value=0, max_value=1),
    max_gross=st.floats(min_value=0, max_value=2),
    allow_shorts=st.booleans(),
    target_vol=st.one_of(st.none(), st.floats(min_value=0.01, max_value=1)),
    cash_buffer=st.floats(min_value=0, max_value=0.99),
)


@settings(max_examples=400)
@given(views_strategy, st.data(), params_strategy)
def test_limits_are_never_exceeded(views, data, params) -> None:
    vols = {t: data.draw(vol_strategy) for t in views}
    weights = target_weights(views, vols, params)
    assert set(weights) == set(views)
    long, short, gross = exposures(weights)
    assert all(math.isfinite(w) for w in weights.values())
    assert all(abs(w) <= params.max_weight + TOL for w in weights.values())
    assert gross <= params.max_gross + TOL
    assert long <= 1 - max(params.cash_buffer, 0.01) + TOL
    if not params.allow_shorts:
        assert short == 0
    for ticker, view in views.items():
        if view is None or not math.isfinite(view) or vols[ticker] is None or not (vols[ticker] or 0) >= 1e-4:
            assert weights[ticker] == 0.0, "no usable view or no risk estimate means no position"
    assert target_weights(views, vols, params) == weights, "deterministic"


@given(st.floats(min_value=0.1, max_value=5), st.floats(min_value=0.005, max_value=0.05))
def test_more_risk_aversion_means_smaller_positions(view: float, vol: float) -> None:
    loose = RiskParams(risk_aversion=2, max_weight=1, max_gross=2)
    tight = RiskParams(risk_aversion=20, max_weight=1, max_gross=2)
    assert target_weights({"A": view}, {"A": vol}, tight)["A"] <= target_weights({"A": view}, {"A": vol}, loose)["A"]


def test_sizing_rule_and_target_volatility() -> None:
    params = RiskParams(risk_aversion=10, max_weight=1, max_gross=2, allow_shorts=True)
    weights = target_weights({"A": 1.5, "B": -2.5}, {"A": 0.02, "B": 0.01}, params)
    assert weights["A"] == pytest.approx(0.015 / (10 * 0.02**2 * 5))
    assert weights["B"] == pytest.approx(-0.025 / (10 * 0.01**2 * 5)) or abs(weights["B"]) == pytest.approx(1.0)
    capped = target_weights({"A": 1.5}, {"A": 0.02}, RiskParams(risk_aversion=10, max_weight=1, max_gross=2, target_vol=0.05))
    assert capped["A"] * 0.02 * math.sqrt(252) == pytest.approx(0.05)


def test_invalid_profiles_are_refused() -> None:
    for kwargs in ({"risk_aversion": 0}, {"max_weight": 1.5}, {"max_gross": -1}, {"cash_buffer": 1.0}, {"target_vol": 0.0}):
        base = {"risk_aversion": 1.0, "max_weight": 0.1, "max_gross": 1.0}
        with pytest.raises(ConfigError):
            RiskParams(**{**base, **kwargs})
    assert not RiskParams(risk_aversion=1, max_weight=0.1, max_gross=0).allows_exposure
    assert all(p.allows_exposure for p in PRESETS.values())


def test_trailing_volatility_needs_history() -> None:
    closes = pd.Series([100 * 1.01**i for i in range(10)])
    assert trailing_daily_volatility(closes) is None
    noisy = pd.Series([100 + (i % 3) for i in range(80)], dtype=float)
    assert trailing_daily_volatility(noisy) > 0


def test_the_profile_in_plain_words() -> None:
    from advisor.portfolio import PRESETS, RiskParams, in_plain_words

    moderate = in_plain_words(PRESETS["moderate"])
    assert moderate[0].startswith("In a bad year (about 1 in 20) this portfolio could lose about 25%")  # 1.645 x 15%
    assert not any("leverage" in line or "Shorts" in line for line in moderate)
    aggressive = " ".join(in_plain_words(PRESETS["aggressive"]))
    assert "That is leverage: positions can add up to 150%" in aggressive and "Shorts are allowed" in aggressive
    assert in_plain_words(RiskParams(risk_aversion=1, max_weight=0.1, max_gross=0.5))[0].startswith("No volatility target")
