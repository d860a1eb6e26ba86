"""The view checker: does a view state only facts that are in its window, and does it agree with itself?

A small model can copy a figure wrongly, invent a quote or list one fact on both sides. The checker
reads a parsed view the way a careful reader would and compares it with the window it was written
from (the same :class:`~advisor.data.windows.ForecastWindow` its prompt showed):

Stated facts (each found or not found):
  * a **move**: a percentage with its sign ("rose 2.93%", "fell 1.25%", "moved -0.10%") and its period
    — a named week ("Week ending 2015-05-22"), "last week" / "3 weeks ago", or the whole window
    ("over 3 weeks"); found when that period's move has the same sign and the same size to the
    precision stated. A percentage with no period is found when any period of the window matches;
  * a **quote**: text in quotation marks, found when its words (links, cashtags, mentions and
    hashtag signs aside, case ignored) occur in that order in a post of the window;
  * a **date** named without a move: found when it is a period of the window or the decision date;
  * an **item that cites nothing** (no move, quote or date; "None of note." aside) is a stated fact
    that cannot be found: a view's developments and concerns must come from the window.
Contradictions:
  * the same item, quote or period's move listed as a positive and as a concern;
  * a fall (or a post read as worried) listed as a positive development, a rise (or an upbeat post)
    as a concern — with the sentiment classifier given, a quoted post's tone is its reading, and a post
    it reads as worried that the view calls upbeat (or the reverse) is a contradiction too;
  * an analysis that expects the opposite direction to the prediction line.

**What a failing view may do**: it is stored and shown with the verdict, but it is not a signal — the
backtest, the paper-trading bot and the portfolio treat it like an unparsed view (no position from it),
because a view that misstates its own data gives no reason to trust its prediction. Evaluation reports
count views both ways (parse rate, and the share that pass the checker).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from advisor.data.labels import Direction
from advisor.data.textselect import readable_words
from advisor.data.windows import ForecastWindow, Horizon
from advisor.forecaster.views import View

_NONE_ITEM = re.compile(r"^\s*(none( of note)?|nothing (clearly )?(positive|negative|of note)( in the (window|posts|data))?|no clearly (positive|negative) news( in the posts)?)\s*\.?\s*$", re.IGNORECASE)
_QUOTE = re.compile(r"[\"“”]([^\"“”]{2,}?)[\"“”]")
_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")
_PERCENT = re.compile(r"(?<![\d.])([+\-−]?\d+(?:\.\d+)?)\s*%")
_UP_VERB = re.compile(r"\b(rose|rise|rises|risen|gained|gain|gains|climbed|jumped|advanced|up|higher|increased)\b", re.IGNORECASE)
_DOWN_VERB = re.compile(r"\b(fell|fall|falls|fallen|lost|dropped|drop|declined|slid|down|lower|decreased|slipped)\b", re.IGNORECASE)
_OVER_PERIODS = re.compile(r"\b(?:over|in|across) (?:the (?:last|past) )?(\d+|two|three|four|five|six) (weeks|sessions|days|trading days)\b", re.IGNORECASE)
_LAST_PERIOD = re.compile(r"\b(last|past|latest|previous) (week|session|day)\b", re.IGNORECASE)
_PERIODS_AGO = re.compile(r"\b(\d+|two|three|four|five|six) (weeks|sessions|days) ago\b", re.IGNORECASE)
_EXPECT = re.compile(
    r"\b(?:expect(?:s|ing)?|anticipate|likely|should|see)\b[^.;:]{0,20}?\b(?P<word>rise|gain|gains|rally|increase|higher|upside|up|fall|decline|drop|lower|downside|down)\b",
    re.IGNORECASE,
)
_UPBEAT_POST = re.compile(r"\b(upbeat|positive|bullish|optimistic)\s+(post|tweet)", re.IGNORECASE)
_WORRIED_POST = re.compile(r"\b(worried|negative|bearish|pessimistic)\s+(post|tweet)", re.IGNORECASE)
_NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_UP_WORDS = {"rise", "gain", "gains", "rally", "increase", "higher", "upside", "up"}


@dataclass
class ViewCheck:
    """The checker's verdict, stored with the view (``Forecast.check_result``)."""

    stated: int = 0
    found: int = 0
    not_found: list[str] = field(default_factory=list)
    contradictions: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.found == self.stated and not self.contradictions

    def summary(self) -> str:
        """One line for a reader: "4 of 4 stated facts found in the data" and what failed."""
        text = f"{self.found} of {self.stated} stated facts found in the data"
        if self.not_found:
            text += "; not found: " + "; ".join(self.not_found)
        if self.contradictions:
            text += "; contradiction: " + "; ".join(self.contradictions)
        return text

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"passed": self.passed}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ViewCheck | None:
        if not data:
            return None
        return cls(int(data["stated"]), int(data["found"]), list(data["not_found"]), list(data["contradictions"]))


@dataclass(frozen=True)
class _Fact:
    """A checked fact: its identity (for both-sides checks), the sign it states, whether it was found."""

    key: str
    sign: int  # +1 rise / upbeat, -1 fall / worried, 0 unknown
    found: bool
    text: str
    read_as: int = 0  # a quoted post: its tone as the sentiment classifier reads it (0: neutral or not asked)


class _Periods:
    """The window's periods as the checker looks them up."""

    def __init__(self, window: ForecastWindow, shown_ids: Sequence[int] | None = None) -> None:
        self.window = window
        self.by_end = {week.end: week.return_pct for week in window.weeks}
        self.ordered = [week.return_pct for week in window.weeks]  # oldest first
        first, last = window.weeks[0], window.weeks[-1]
        self.trend = (last.end_price / first.start_price - 1.0) * 100.0
        self.unit = "session" if window.horizon is Horizon.DAY else "week"
        self.posts = [[w.lower() for w in readable_words(t.text)] for week in window.weeks for t in week.texts]
        # the posts the prompt showed, newest first: those a quote's tone is read from (grounding lists the newest)
        shown = None if shown_ids is None else set(shown_ids)
        self.shown = [(t.text, [w.lower() for w in readable_words(t.text)]) for week in reversed(window.weeks)
                      for t in reversed(week.texts) if shown is None or t.id in shown]

    def ago(self, n: int) -> float | None:
        return self.ordered[-n] if 1 <= n <= len(self.ordered) else None


def _number(word: str) -> int:
    return int(word) if word.isdigit() else _NUMBERS[word.lower()]


def _matches(claimed: str, sign: int, actual: float) -> bool:
    """``claimed`` (as written, e.g. "2.93" or "-0.1") with a verb's ``sign`` matches ``actual`` percent."""
    value = float(claimed.replace("−", "-"))
    decimals = len(claimed.split(".", 1)[1]) if "." in claimed else 0
    tolerance = 0.5 * 10 ** (-decimals) + 1e-9
    if claimed.startswith(("+", "-", "−")):
        return abs(value - actual) <= tolerance
    if sign == 0:
        return abs(abs(actual) - value) <= tolerance
    return abs(sign * value - actual) <= tolerance


def _without_quotes(text: str) -> str:
    return _QUOTE.sub(" ", text)


def _clauses(text: str) -> list[str]:
    """Clauses of an item or analysis: a move and its period are stated within one clause."""
    return [c for c in re.split(r";|(?<=[^\d])\.(?=\s|$)|\.\s+(?=[A-Z])", text) if c.strip()]


def _move_facts(text: str, periods: _Periods) -> list[_Fact]:
    facts = []
    for clause in _clauses(_without_quotes(text)):
        for match in _PERCENT.finditer(clause):
            claimed = match.group(1)
            before = clause[: match.start()]
            up, down = _UP_VERB.findall(before), _DOWN_VERB.findall(before)
            sign = 0
            if up or down:
                last_up = max((m.end() for m in _UP_VERB.finditer(before)), default=-1)
                last_down = max((m.end() for m in _DOWN_VERB.finditer(before)), default=-1)
                sign = 1 if last_up > last_down else -1
            explicit = claimed.startswith(("+", "-", "−"))
            stated_sign = (1 if not claimed.startswith(("-", "−")) else -1) if explicit else sign
            candidates: list[tuple[str, float | None]] = []
            dated = _DATE.search(clause)
            over = _OVER_PERIODS.search(clause)
            last = _LAST_PERIOD.search(clause)
            ago = _PERIODS_AGO.search(clause)
            if dated:
                day = date.fromisoformat(dated.group(1))
                candidates = [(f"{periods.unit} ending {day}", periods.by_end.get(day))]
            elif over:
                n = _number(over.group(1))
                candidates = [(f"{n} {over.group(2)}", periods.trend if n == len(periods.ordered) else None)]
            elif ago:
                n = _number(ago.group(1))
                candidates = [(f"{n} {periods.unit}s ago", periods.ago(n))]
            elif last:
                candidates = [(f"last {periods.unit}", periods.ago(1))]
            else:
                candidates = [(f"{periods.unit} ending {w.end}", w.return_pct) for w in periods.window.weeks]
                candidates.append(("the window", periods.trend))
            hit = next((name for name, actual in candidates if actual is not None and _matches(claimed, sign, actual)), None)
            name = hit or candidates[0][0]
            shown = f"{'+' if stated_sign > 0 else '-' if stated_sign < 0 else ''}{claimed.lstrip('+-−')}%"
            facts.append(_Fact(f"move {name}", stated_sign, hit is not None, f"{shown} move ({name})"))
    return facts


def _quote_facts(text: str, periods: _Periods, tone: Callable[[str], int] | None = None) -> list[_Fact]:
    """Quotes and whether a post of the window holds them. With ``tone`` (the sentiment classifier) a found
    post's tone is read too: it is the quote's sign when the view's wording gives none."""
    facts = []
    stated = 1 if _UPBEAT_POST.search(text) else -1 if _WORRIED_POST.search(text) else 0
    for match in _QUOTE.finditer(text):
        words = [w.lower() for w in readable_words(match.group(1).strip(" .…"))]
        if not words:
            continue
        n = len(words)
        found = any(post[i : i + n] == words for post in periods.posts for i in range(len(post) - n + 1))
        read_as = 0
        if tone is not None and found:
            # posts may share a quoted first sentence (reposts) and read differently: the stated tone stands when
            # any shown post holding the quote reads that way, else the newest one's reading counts
            readings = [tone(text) for text, post in periods.shown if any(post[i : i + n] == words for i in range(len(post) - n + 1))]
            read_as = stated if stated and stated in readings else (readings[0] if readings else 0)
        sign = stated or read_as
        facts.append(_Fact("quote " + " ".join(words), sign, found, f'quote "{match.group(1).strip()}"', read_as))
    return facts


def _date_facts(text: str, periods: _Periods) -> list[_Fact]:
    """Dates named without a move in the same clause (those are checked with their move)."""
    facts = []
    for clause in _clauses(_without_quotes(text)):
        if _PERCENT.search(clause):
            continue
        for match in _DATE.finditer(clause):
            day = date.fromisoformat(match.group(1))
            known = day in periods.by_end or day == periods.window.decision_date
            facts.append(_Fact(f"date {day}", 0, known, f"date {day}"))
    return facts


def _item_facts(item: str, periods: _Periods, tone: Callable[[str], int] | None = None) -> list[_Fact]:
    if _NONE_ITEM.match(item):
        return []
    facts = _quote_facts(item, periods, tone) + _move_facts(item, periods) + _date_facts(item, periods)
    if not facts:
        shown = item if len(item) <= 60 else item[:57] + "..."
        facts.append(_Fact("item " + item.lower(), 0, False, f'"{shown}" cites no move or post of the window'))
    return facts


def _expected_direction(analysis: str) -> Direction | None:
    match = _EXPECT.search(_without_quotes(analysis))
    if match is None:
        return None
    return Direction.UP if match.group("word").lower() in _UP_WORDS else Direction.DOWN


def check_view(
    view: View, window: ForecastWindow, tone: Callable[[str], int] | None = None, shown_ids: Sequence[int] | None = None
) -> ViewCheck:
    """The verdict for ``view`` against the window it was written from (see module docstring).

    ``tone(post text)``: the sentiment classifier's reading (-1/0/+1) of a quoted post, so a post it
    reads as worried cannot pass as a positive development, nor be called upbeat; read from the posts
    the prompt showed (``shown_ids``; default all).
    """
    periods = _Periods(window, shown_ids)
    result = ViewCheck()
    sides: dict[str, list[_Fact]] = {"positive": [], "concern": []}
    for side, items in (("positive", view.positives), ("concern", view.concerns)):
        for item in items:
            facts = _item_facts(item, periods, tone)
            sides[side].extend(facts)
            for fact in facts:
                if fact.read_as and fact.sign == -fact.read_as:
                    called, read = ("upbeat", "worried") if fact.sign > 0 else ("worried", "upbeat")
                    result.contradictions.append(f"a post the sentiment classifier reads as {read} called {called} ({fact.text})")
                if fact.sign == (-1 if side == "positive" else 1) and not fact.key.startswith("item"):
                    kind = "a fall" if fact.sign < 0 and fact.key.startswith("move") else "a rise" if fact.key.startswith("move") else (
                        "a worried post" if fact.sign < 0 else "an upbeat post")
                    where = "a positive development" if side == "positive" else "a concern"
                    result.contradictions.append(f"{kind} listed as {where} ({fact.text})")
    analysis_facts = [f for f in _move_facts(view.analysis, periods) + _quote_facts(view.analysis, periods, tone) + _date_facts(view.analysis, periods)]
    for fact in sides["positive"] + sides["concern"] + analysis_facts:
        result.stated += 1
        if fact.found:
            result.found += 1
        else:
            result.not_found.append(fact.text)
    both = {f.key for f in sides["positive"]} & {f.key for f in sides["concern"]}
    for key in sorted(both):
        text = next(f.text for f in sides["positive"] if f.key == key)
        result.contradictions.append(f"{text} is listed as a positive and as a concern")
    expected = _expected_direction(view.analysis)
    if view.direction is not None and expected is not None and expected is not view.direction:
        result.contradictions.append(f"the analysis expects the stock to go {expected.value}, the prediction says {view.direction.value}")
    return result
