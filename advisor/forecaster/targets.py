"""SFT targets written from the realised label and the facts in the window — no external model.

FinGPT-Forecaster trained on GPT-4 rationales written after GPT-4 was told the answer. We write the
rationale ourselves, from facts the prompt shows, so every line of a target can be checked against its
window by :mod:`advisor.forecaster.checker` (and the tuned model learns to state only such facts):

* positives: past weeks the stock rose by at least 1% ("Week ending 2015-05-22: the stock rose 2.93%.",
  the date and the figure exactly as the prompt shows them) and posts the sentiment scorer reads as
  bullish, quoted in their readable words (no links, cashtags or mentions; the first sentence, at
  most 12 words);
* concerns: weeks it fell by at least 1% and posts read as bearish, the same way;
  (most recent first, moves before posts, at most 2 each; a fact is on one side only);
* prediction: the realised move of the following week, in FinGPT's bins;
* analysis: which side drives the prediction, in the prediction's direction ("Expect a fall: two
  weekly falls outweigh an upbeat post; over 3 weeks the stock moved -0.10%.").

The analysis is post-hoc by construction (as FinGPT's was): it teaches the format and a way of
weighing facts, not hidden knowledge. Whether the tuned model *predicts* anything is measured
separately, on later weeks, against baselines (:mod:`advisor.forecaster.evaluation`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from advisor.data.textselect import readable_quote
from advisor.data.windows import ForecastWindow, Horizon, TextSnippet, WeeklyLabel, WeekMove
from advisor.forecaster.sentiment import PostScorer
from advisor.forecaster.views import render_view

MAX_FACTORS = 2
MOVE_THRESHOLD_PCT = 1.0
NO_POSITIVES = "Nothing clearly positive in the window."
NO_CONCERNS = "Nothing clearly negative in the window."
NUMBER_WORDS = {1: "a", 2: "two", 3: "three", 4: "four", 5: "five"}


@dataclass(frozen=True)
class Factor:
    """One fact on one side of a view: a past period's move or a post."""

    kind: str  # "move" or "post"
    text: str


def period_label(window: ForecastWindow, week: WeekMove) -> str:
    """The period's name exactly as the prompt prints it (see :func:`advisor.data.windows.format_window`)."""
    return f"Day {week.end}" if window.horizon is Horizon.DAY else f"Week ending {week.end}"


def move_fact(window: ForecastWindow, week: WeekMove) -> str:
    move = week.return_pct
    return f"{period_label(window, week)}: the stock {'rose' if move >= 0 else 'fell'} {abs(move):.2f}%."


def window_factors(
    window: ForecastWindow, scorer: PostScorer, visible: Callable[[TextSnippet], bool] | None = None
) -> tuple[list[Factor], list[Factor]]:
    """Every positive and negative fact of the window, most recent period first, moves before posts.

    ``visible(post)``: whether a post may be quoted (the prompt shows it); default all. Grounded
    decoding (:mod:`advisor.forecaster.grounding`) lets a view list any of these; a target lists
    the first :data:`MAX_FACTORS` of each side.
    """
    positives: list[Factor] = []
    concerns: list[Factor] = []
    quoted: set[str] = set()
    for week in reversed(window.weeks):
        move = week.return_pct
        if move >= MOVE_THRESHOLD_PCT:
            positives.append(Factor("move", move_fact(window, week)))
        elif move <= -MOVE_THRESHOLD_PCT:
            concerns.append(Factor("move", move_fact(window, week)))
        for snippet in reversed(week.texts):
            if visible is not None and not visible(snippet):
                continue
            quote = readable_quote(snippet.text)
            if quote is None or quote.lower() in quoted:
                continue
            tone = scorer.score(snippet.text)
            if tone > 0:
                positives.append(Factor("post", f'Upbeat post: "{quote}"'))
            elif tone < 0:
                concerns.append(Factor("post", f'Worried post: "{quote}"'))
            else:
                continue
            quoted.add(quote.lower())
    return positives, concerns


def factors(window: ForecastWindow, scorer: PostScorer) -> tuple[list[Factor], list[Factor]]:
    """The facts a target lists: the first :data:`MAX_FACTORS` of each side."""
    positives, concerns = window_factors(window, scorer)
    return positives[:MAX_FACTORS], concerns[:MAX_FACTORS]


def describe(side: list[Factor], horizon: Horizon, rising: bool) -> str:
    """ "two weekly falls and a worried post" — what a side of the view consists of."""
    unit = "daily" if horizon is Horizon.DAY else "weekly"
    moves = sum(f.kind == "move" for f in side)
    posts = len(side) - moves
    parts = []
    if moves:
        parts.append(f"{NUMBER_WORDS[moves]} {unit} {'rise' if rising else 'fall'}{'s' if moves > 1 else ''}")
    if posts:
        count = "an" if posts == 1 and rising else NUMBER_WORDS[posts]  # "an upbeat post"
        parts.append(f"{count} {'upbeat' if rising else 'worried'} post{'s' if posts > 1 else ''}")
    return " and ".join(parts)


def trend_pct(window: ForecastWindow) -> float:
    first, last = window.weeks[0], window.weeks[-1]
    return (last.end_price / first.start_price - 1.0) * 100.0


def trend_fact(window: ForecastWindow) -> str:
    unit = "sessions" if window.horizon is Horizon.DAY else "weeks"
    return f"over {len(window.weeks)} {unit} the stock moved {trend_pct(window):+.2f}%"


def analysis_for(window: ForecastWindow, rise: bool, positives: list[Factor], concerns: list[Factor]) -> str:
    """One sentence: the expected direction, the side that drives it, and the window's trend."""
    expect = "Expect a rise" if rise else "Expect a fall"
    pro, con = (positives, concerns) if rise else (concerns, positives)
    pro_text = describe(pro, window.horizon, rising=rise)
    con_text = describe(con, window.horizon, rising=not rise)
    if pro and con:
        reason = f"{expect}: {pro_text} outweigh{'s' if len(pro) == 1 else ''} {con_text}"
    elif pro:
        reason = f"{expect} on {pro_text}"
    elif con:
        verdict = "priced in" if rise else "stretched"  # bad news already in the price / gains that went too far
        reason = f"{expect} despite {con_text}, which look{'s' if len(con) == 1 else ''} {verdict}"
    else:
        reason = f"{expect} with no clear news either way"
    return f"{reason}; {trend_fact(window)}."


def sft_target(window: ForecastWindow, label: WeeklyLabel, scorer: PostScorer) -> str:
    positives, concerns = factors(window, scorer)
    analysis = analysis_for(window, label.direction.sign > 0, positives, concerns)
    return render_view(
        label.direction,
        label.magnitude,
        [f.text for f in positives] or [NO_POSITIVES],
        [f.text for f in concerns] or [NO_CONCERNS],
        analysis,
    )
