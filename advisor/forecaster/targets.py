"""SFT targets written from the realised label and the facts in the window — no external model.

FinGPT-Forecaster trained on GPT-4 rationales written after GPT-4 was told the answer. We write the
rationale ourselves, from facts the prompt shows, and the prediction is the realised label:

* positives: weeks the stock rose by at least 1% and posts the sentiment scorer reads as bullish;
* concerns: weeks it fell by at least 1% and posts read as bearish;
  (most recent first, at most 2 each; posts are paraphrased by quoting their first words);
* prediction: the realised move of the following week, in FinGPT's bins;
* analysis: one sentence relating the balance of factors and the recent trend to that prediction
  (the prediction line states the move; the analysis does not repeat it).

The analysis is post-hoc by construction (as FinGPT's was): it teaches the format and a way of
weighing facts, not hidden knowledge. Whether the tuned model *predicts* anything is measured
separately, on later weeks, against baselines (:mod:`advisor.forecaster.evaluation`).
"""

from __future__ import annotations

from advisor.data.windows import ForecastWindow, Horizon, WeeklyLabel
from advisor.forecaster.sentiment import SentimentScorer
from advisor.forecaster.views import render_view

MAX_FACTORS = 2
MOVE_THRESHOLD_PCT = 1.0
QUOTE_WORDS = 6  # short quotes keep answers ~100 tokens: decoding dominates the cost of a view on a CPU


def _quote(text: str) -> str:
    words = text.split()
    short = " ".join(words[:QUOTE_WORDS])
    return short + ("…" if len(words) > QUOTE_WORDS else "")


def factors(window: ForecastWindow, scorer: SentimentScorer) -> tuple[list[str], list[str]]:
    """Positive and negative facts from the window, most recent first."""
    positives: list[str] = []
    concerns: list[str] = []
    daily = window.horizon is Horizon.DAY
    for back, week in enumerate(reversed(window.weeks), 1):
        move = week.return_pct
        when = _ago(back, daily)
        if move >= MOVE_THRESHOLD_PCT:
            positives.append(f"The stock rose {move:.1f}% {when}.")
        elif move <= -MOVE_THRESHOLD_PCT:
            concerns.append(f"The stock fell {abs(move):.1f}% {when}.")
        for snippet in reversed(week.texts):
            tone = scorer.score(snippet.text)
            if tone > 0:
                positives.append(f'Upbeat post: "{_quote(snippet.text)}"')
            elif tone < 0:
                concerns.append(f'Worried post: "{_quote(snippet.text)}"')
    return positives[:MAX_FACTORS], concerns[:MAX_FACTORS]


def _ago(periods: int, daily: bool) -> str:
    """Relative time ("last week", "3 weeks ago"): as clear as a date and a third of the tokens."""
    unit = "session" if daily else "week"
    return f"in the last {unit}" if daily and periods == 1 else "last week" if periods == 1 else f"{periods} {unit}s ago"


def trend_pct(window: ForecastWindow) -> float:
    first, last = window.weeks[0], window.weeks[-1]
    return (last.end_price / first.start_price - 1.0) * 100.0


def sft_target(window: ForecastWindow, label: WeeklyLabel, scorer: SentimentScorer) -> str:
    positives, concerns = factors(window, scorer)
    trend = trend_pct(window)
    span = f"{len(window.weeks)} {'days' if window.horizon is Horizon.DAY else 'weeks'}"
    rise = label.direction.sign > 0
    if positives and concerns:
        balance = "The positives outweigh the concerns" if rise else "The concerns outweigh the positives"
    elif positives:
        balance = "The positives dominate" if rise else "Despite the positives, gains look stretched"
    elif concerns:
        balance = "The concerns look priced in" if rise else "The concerns dominate"
    else:
        balance = "There is little news either way"
    analysis = f"{balance}; the stock moved {trend:+.1f}% over {span}."
    if not positives:
        positives = ["No clearly positive news in the posts."]
    if not concerns:
        concerns = ["No clearly negative news in the posts."]
    return render_view(label.direction, label.magnitude, positives, concerns, analysis)
