"""The weekly view: its answer format, a renderer, and a parser that does not trust the model.

The format is short enough for a small model::

    [Positive Developments]
    1. ...
    [Potential Concerns]
    1. ...
    [Prediction & Analysis]
    Prediction: Up by 1-2%
    Analysis: ...

``Prediction`` is "Up by X-Y%" or "Down by X-Y%" with X-Y one of 0-1 .. 4-5, or "Up/Down by more than 5%".

:func:`parse_view` tries the strict grammar first (status ``ok``); if that fails, tolerant fallbacks
accept near-misses — other capitalisation, missing brackets or markdown, "rise"/"fall" for up/down,
"1 to 2 percent", "over 5%", a single figure such as "2.5%" (placed in its bin) — with status
``fallback``. Anything else (no prediction, two different predictions, a prediction line that names
several moves such as the echoed template "Up by 0-1%, 1-2%, ...", a range that is not a bin such as
"2-4%", empty output) is ``unparsed`` with the reason; an unparsed view never becomes a signal.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import StrEnum

from advisor.data.labels import MAX_BIN, Direction, MagnitudeBin, bin_for_return, label_text, signed_value

POSITIVES_HEADER = "[Positive Developments]"
CONCERNS_HEADER = "[Potential Concerns]"
PREDICTION_HEADER = "[Prediction & Analysis]"
MAX_ITEMS = 5


class ParseStatus(StrEnum):
    OK = "ok"
    FALLBACK = "fallback"
    UNPARSED = "unparsed"


@dataclass(frozen=True)
class View:
    """A parsed forecast. ``direction``/``magnitude`` are None exactly when the view is unparsed."""

    status: ParseStatus
    direction: Direction | None = None
    magnitude: MagnitudeBin | None = None
    positives: tuple[str, ...] = field(default=())
    concerns: tuple[str, ...] = field(default=())
    analysis: str = ""
    error: str | None = None

    @property
    def is_signal(self) -> bool:
        return self.status is not ParseStatus.UNPARSED and self.direction is not None and self.magnitude is not None

    @property
    def prediction_text(self) -> str | None:
        if not self.is_signal:
            return None
        return label_text(self.direction, self.magnitude)  # type: ignore[arg-type]

    @property
    def expected_return_pct(self) -> float | None:
        """Signed bin midpoint in percent (FinGPT convention; "more than 5%" = 5.5)."""
        if not self.is_signal:
            return None
        return signed_value(self.direction, self.magnitude)  # type: ignore[arg-type]


def render_view(
    direction: Direction, magnitude: MagnitudeBin, positives: list[str] | tuple[str, ...], concerns: list[str] | tuple[str, ...], analysis: str
) -> str:
    """The canonical answer text (what SFT targets look like and what the strict parser accepts)."""
    lines = [POSITIVES_HEADER]
    lines += [f"{i}. {_one_line(item)}" for i, item in enumerate(positives, 1)] or ["1. None of note."]
    lines.append(CONCERNS_HEADER)
    lines += [f"{i}. {_one_line(item)}" for i, item in enumerate(concerns, 1)] or ["1. None of note."]
    lines.append(PREDICTION_HEADER)
    lines.append(f"Prediction: {label_text(direction, magnitude)}")
    lines.append(f"Analysis: {_one_line(analysis)}")
    return "\n".join(lines)


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# --------------------------------------------------------------------------------------------------
# Strict grammar
# --------------------------------------------------------------------------------------------------

_STRICT_PREDICTION = re.compile(r"^Prediction: (Up|Down) by (?:(\d)-(\d)%|more than 5%)$")
_STRICT_ITEM = re.compile(r"^(\d+)\. (\S.*)$")
_STRICT_ANALYSIS = re.compile(r"^Analysis: (\S.*)$")


def _parse_strict(text: str) -> View | None:
    lines = [line.rstrip() for line in text.strip().splitlines()]
    try:
        i = lines.index(POSITIVES_HEADER)
        j = lines.index(CONCERNS_HEADER)
        k = lines.index(PREDICTION_HEADER)
    except ValueError:
        return None
    if not (i == 0 and i < j < k) or len(lines) != k + 3:
        return None
    positives = _strict_items(lines[i + 1 : j])
    concerns = _strict_items(lines[j + 1 : k])
    prediction = _STRICT_PREDICTION.match(lines[k + 1])
    analysis = _STRICT_ANALYSIS.match(lines[k + 2])
    if positives is None or concerns is None or prediction is None or analysis is None:
        return None
    direction = Direction.UP if prediction.group(1) == "Up" else Direction.DOWN
    if prediction.group(2) is None:
        magnitude = MagnitudeBin(MAX_BIN, None)
    else:
        low, high = int(prediction.group(2)), int(prediction.group(3))
        if high != low + 1 or high > MAX_BIN:
            return None
        magnitude = MagnitudeBin(low, high)
    return View(ParseStatus.OK, direction, magnitude, tuple(positives), tuple(concerns), analysis.group(1).strip())


def _strict_items(lines: list[str]) -> list[str] | None:
    items = []
    for expected, line in enumerate(lines, 1):
        match = _STRICT_ITEM.match(line)
        if match is None or int(match.group(1)) != expected:
            return None
        items.append(match.group(2).strip())
    return items if 1 <= len(items) <= MAX_ITEMS else None


# --------------------------------------------------------------------------------------------------
# Tolerant fallbacks
# --------------------------------------------------------------------------------------------------

_UP_WORDS = r"up|rise|rises|rising|increase|increases|gain|gains|higher|climb|climbs|bullish"
_DOWN_WORDS = r"down|fall|falls|falling|decrease|decreases|decline|declines|drop|drops|lower|bearish"
_NUMBER = r"\d+(?:\.\d+)?"
_PERCENT = r"\s*(?:%|percent|per\s*cent)"
_RANGE_SEP = r"\s*(?:-|–|—|to)\s*"
_FALLBACK_PREDICTION = re.compile(
    rf"prediction\s*[*_]*\s*[:\-–]?\s*[*_]*\s*(?P<dir>{_UP_WORDS}|{_DOWN_WORDS})\b\s*(?:by|of|about|around|roughly)?\s*"
    rf"(?:(?P<lo>{_NUMBER})(?:{_PERCENT})?{_RANGE_SEP}(?P<hi>{_NUMBER}){_PERCENT}"
    rf"|(?:more\s+than|over|above|>)\s*(?P<over>{_NUMBER}){_PERCENT}"
    rf"|(?P<single>{_NUMBER}){_PERCENT})",
    re.IGNORECASE,
)
_FALLBACK_HEADER = re.compile(
    r"^\s*[#*_\s]*\[?\s*(?P<name>positive developments?|potential concerns?|concerns?|positives?|prediction\s*(?:&|and)\s*analysis)\s*\]?\s*[*_:]*\s*$",
    re.IGNORECASE,
)
_FALLBACK_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s*(?P<item>\S.*)$")
_ANOTHER_MOVE = re.compile(rf"{_NUMBER}{_PERCENT}", re.IGNORECASE)
_FALLBACK_ANALYSIS = re.compile(r"analysis\s*[*_]*\s*[:\-–]\s*[*_]*\s*(?P<text>\S.*)", re.IGNORECASE)


def _fallback_magnitude(match: re.Match[str]) -> tuple[MagnitudeBin | None, str | None]:
    if match.group("over") is not None:
        value = float(match.group("over"))
        return (MagnitudeBin(MAX_BIN, None), None) if value == MAX_BIN else (None, f"'more than {value:g}%' is not a bin")
    if match.group("single") is not None:
        value = float(match.group("single"))
        if not math.isfinite(value) or value > 100:
            return None, f"{value:g}% is not a plausible weekly move"
        return bin_for_return(value)[1], None
    low, high = float(match.group("lo")), float(match.group("hi"))
    if low.is_integer() and high.is_integer() and high == low + 1 and 0 <= low < MAX_BIN:
        return MagnitudeBin(int(low), int(high)), None
    return None, f"range {low:g}-{high:g}% is not one of the bins (0-1% .. 4-5%, more than 5%)"


def _parse_fallback(text: str) -> View:
    matches = list(_FALLBACK_PREDICTION.finditer(text))
    if not matches:
        return View(ParseStatus.UNPARSED, error="no 'Prediction: Up/Down by X-Y%' line found")
    outcomes = set()
    errors = []
    for match in matches:
        rest_of_line = text[match.end() :].split("\n", 1)[0]
        if _ANOTHER_MOVE.search(rest_of_line):
            # "Prediction: Up by 0-1%, 1-2%, ... or more than 5%" is the answer template echoed, not a
            # choice; taking its first bin would be guessing.
            errors.append("the prediction line names several moves (the answer template, not a choice)")
            continue
        word = match.group("dir").lower()
        direction = Direction.UP if re.fullmatch(_UP_WORDS, word) else Direction.DOWN
        magnitude, error = _fallback_magnitude(match)
        if magnitude is None:
            errors.append(error or "invalid magnitude")
            continue
        outcomes.add((direction, magnitude))
    if not outcomes:
        return View(ParseStatus.UNPARSED, error=errors[0])
    if len(outcomes) > 1:
        shown = ", ".join(sorted(label_text(d, m) for d, m in outcomes))
        return View(ParseStatus.UNPARSED, error=f"conflicting predictions: {shown}")
    direction, magnitude = outcomes.pop()
    positives, concerns = _fallback_sections(text)
    analysis_match = _FALLBACK_ANALYSIS.search(text[matches[-1].end() :]) or _FALLBACK_ANALYSIS.search(text)
    analysis = analysis_match.group("text").strip() if analysis_match else ""
    return View(ParseStatus.FALLBACK, direction, magnitude, positives, concerns, analysis)


def _fallback_sections(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    sections: dict[str, list[str]] = {"positive": [], "concern": []}
    current: str | None = None
    for line in text.splitlines():
        header = _FALLBACK_HEADER.match(line)
        if header:
            name = header.group("name").lower()
            current = "positive" if name.startswith("positive") else "concern" if "concern" in name else None
            continue
        item = _FALLBACK_ITEM.match(line)
        if current and item and len(sections[current]) < MAX_ITEMS:
            sections[current].append(item.group("item").strip())
    return tuple(sections["positive"]), tuple(sections["concern"])


REPEAT_LIMIT = 3
_STOP_PREDICTION = re.compile(r"prediction\s*[*_]*\s*[:\-–]\s*\S", re.IGNORECASE)
_STOP_ANALYSIS = re.compile(r"^[#*_\s]*analysis\s*[*_]*\s*[:\-–]\s*[*_]*\s*\S", re.IGNORECASE)


def answer_stop_reason(text: str) -> str | None:
    """Why generation of ``text`` (the answer so far) can stop early, or None to go on.

    Only complete lines count (the text after the last newline may still grow):
      * ``answer_complete``: an analysis line after a prediction line; the format ends there, so
        nothing later could be part of the answer (the strict parser wants nothing after it);
      * ``repetition``: the same non-empty line for the ``REPEAT_LIMIT``-th time; a small model that
        loops (the untuned base does) would only repeat itself up to the token limit.
    Neither rule can turn a bad answer into a parsed one; they only stop paying for tokens that
    cannot change the parse.
    """
    lines = [line.strip() for line in text.split("\n")[:-1]]
    seen: dict[str, int] = {}
    predicted = False
    for line in lines:
        if not line:
            continue
        seen[line] = seen.get(line, 0) + 1
        if seen[line] >= REPEAT_LIMIT:
            return "repetition"
        if predicted and _STOP_ANALYSIS.match(line):
            return "answer_complete"
        if _STOP_PREDICTION.search(line):
            predicted = True
    return None


def parse_view(text: str | None) -> View:
    """Parse model output into a :class:`View` (see module docstring); never raises on bad text."""
    if text is None or not text.strip():
        return View(ParseStatus.UNPARSED, error="empty output")
    strict = _parse_strict(text)
    if strict is not None:
        return strict
    return _parse_fallback(text)
