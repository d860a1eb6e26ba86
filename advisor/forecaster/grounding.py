"""Grounded decoding: a view's facts are copied from its window, token by token, never made up.

A 135M-parameter model trained on grounded targets still miscopies: the shipped adapter's free
views cited a week's move with another week's date, or a figure the window does not have, in about
a third of the items (see the README's evaluation). So generation constrains the parts of a view
that state facts, and leaves the model the parts that are decisions:

* **Each item** of "[Positive Developments]" and "[Potential Concerns]" (the text after "1.", "2.",
  ...) is one of the window's facts for that side, written exactly as the SFT targets write it
  (:func:`advisor.forecaster.targets.window_factors`): a rise of at least 1% or an upbeat post on
  the positive side, a fall of at least 1% or a worried post on the concern side, or "Nothing
  clearly positive/negative in the window." as the first item. A fact listed once cannot be listed
  again, so nothing is on both sides. When a side has no facts left, its list ends.
* **The analysis** is written from the items the model chose and the direction of its own
  prediction line (:func:`advisor.forecaster.targets.analysis_for`), so it names the side that
  drives the prediction, agrees with it, and states the window's move as the data has it.
* **The model decides** which facts to list, how many, in which order, and the prediction
  (direction and bin): within an item, the tokens it may choose are those of the facts still
  open, and it picks among them by its own probabilities (greedy or sampled).

Posts quoted are those the prompt shows (the prompt builder may drop posts to fit its budget and
shortens long ones); their tone is the same sentiment scorer's that wrote the training targets.

The constraint works on token ids: every allowed continuation is tokenized once, in the canonical
tokenization the model was trained on, and kept in a trie; a decoding step masks the logits of
every token that is not a child of the current trie node. Both the ``engine`` and the
``transformers`` backends apply the same :class:`GroundedState`, so their greedy views agree. The
checker (:mod:`advisor.forecaster.checker`) still reads every view: the constraint is not trusted
either, and a view decoded without it (``--no-grounding``, or the ``openai`` server backend) is
checked the same way.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from advisor.data.textselect import readable_quote, readable_words
from advisor.data.windows import ForecastWindow
from advisor.forecaster.sentiment import PostScorer
from advisor.forecaster.targets import NO_CONCERNS, NO_POSITIVES, Factor, analysis_for, window_factors
from advisor.forecaster.views import CONCERNS_HEADER, MAX_ITEMS, POSITIVES_HEADER, PREDICTION_HEADER

_ITEM_NUMBER = re.compile(r"(\d+)\.")
_PREDICTION = re.compile(r"^Prediction: (Up|Down)\b", re.MULTILINE)


@dataclass(frozen=True)
class Grounding:
    """What one view may state: the window's facts per side (text-level, any tokenizer)."""

    window: ForecastWindow
    positives: tuple[Factor, ...]
    concerns: tuple[Factor, ...]


def grounding_for(
    window: ForecastWindow, scorer: PostScorer, shown_ids: Sequence[int] | None = None, max_text_chars: int | None = None
) -> Grounding:
    """The facts a view of ``window`` may list, restricted to posts the prompt shows.

    ``shown_ids``: the text items the prompt kept (None: all); ``max_text_chars``: the prompt's
    shortening of long posts (a quote must be readable in the shortened post).
    """
    shown = None if shown_ids is None else set(shown_ids)

    def visible(snippet: Any) -> bool:
        if shown is not None and snippet.id not in shown:
            return False
        if max_text_chars is None or len(snippet.text) <= max_text_chars:
            return True
        quote = readable_quote(snippet.text)
        if quote is None:
            return False
        words = [w.lower() for w in readable_words(snippet.text[: max_text_chars - 1])]
        # the last word of a shortened post may be cut, so the quote must end before it
        return [w.lower() for w in quote.split()] == words[: len(quote.split())] and len(words) > len(quote.split())

    positives, concerns = window_factors(window, scorer, visible)
    return Grounding(window, tuple(positives), tuple(concerns))


# --------------------------------------------------------------------------------------------------
# Token level
# --------------------------------------------------------------------------------------------------


@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    value: Any = None  # set on the leaf that completes a continuation

    @property
    def allowed(self) -> list[int]:
        return list(self.children)


class Codec:
    """A tokenizer's view of text for the constraint: each token's text, and canonical encodings."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self.texts = [tokenizer.convert_tokens_to_string([p]) if p is not None else "" for p in pieces]
        self.eos = tokenizer.eos_token_id
        self._encoded: dict[str, tuple[int, ...]] = {}

    def encode(self, text: str) -> tuple[int, ...]:
        if text not in self._encoded:
            self._encoded[text] = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return self._encoded[text]

    def trie(self, options: Sequence[tuple[str, Any]], end_with_eos: bool = False) -> _Node:
        """A trie over the canonical token ids of each option's text (value at its leaf)."""
        root = _Node()
        for text, value in options:
            ids = list(self.encode(text)) + ([self.eos] if end_with_eos and self.eos is not None else [])
            node = root
            for token in ids:
                node = node.children.setdefault(token, _Node())
            node.value = value
        return root


_CODECS: weakref.WeakKeyDictionary[Any, Codec] = weakref.WeakKeyDictionary()


def codec_for(tokenizer: Any) -> Codec:
    """One codec per tokenizer (building it is a pass over the vocabulary)."""
    if tokenizer not in _CODECS:
        _CODECS[tokenizer] = Codec(tokenizer)
    return _CODECS[tokenizer]


class GroundedState:
    """The constraint for one sequence being decoded: ``allowed()`` before a step, ``advance(token)`` after."""

    def __init__(self, grounding: Grounding, codec: Codec) -> None:
        self.grounding = grounding
        self.codec = codec
        self.text = ""
        self.chosen: dict[str, list[Factor]] = {"positive": [], "concern": []}
        # every answer opens with the positives header and its first item number (the targets' format)
        self.forced: _Node | None = codec.trie([(f"{POSITIVES_HEADER}\n1.", "header")])
        self.finished = False

    def allowed(self) -> list[int] | None:
        """Token ids the next step may choose (None: any)."""
        return None if self.forced is None or self.finished else self.forced.allowed

    def advance(self, token: int) -> None:
        if self.finished:
            return
        if token == self.codec.eos:
            self.finished = True
            return
        self.text += self.codec.texts[token]
        if self.forced is not None:
            node = self.forced.children.get(token)
            if node is None:  # not reachable when the mask was applied; decode freely from here
                self.forced = None
            elif node.children:
                self.forced = node
                return
            else:
                self.forced = None
                self._completed(node.value)
                return
        self._trigger()

    # ------------------------------------------------------------------ the rules

    def _section(self) -> str | None:
        marks = {
            "positive": self.text.rfind(POSITIVES_HEADER),
            "concern": self.text.rfind(CONCERNS_HEADER),
            "prediction": self.text.rfind(PREDICTION_HEADER),
        }
        best = max(marks, key=lambda k: marks[k])
        return best if marks[best] >= 0 else None

    def _line(self) -> str:
        return self.text[self.text.rfind("\n") + 1 :]

    def _open(self, side: str) -> list[Factor]:
        used = {f.text for chosen in self.chosen.values() for f in chosen}
        facts = self.grounding.positives if side == "positive" else self.grounding.concerns
        return [f for f in facts if f.text not in used]

    def _trigger(self) -> None:
        section = self._section()
        line = self._line()
        if section in ("positive", "concern"):
            number = _ITEM_NUMBER.fullmatch(line)
            if number is None:
                return
            options: list[tuple[str, Any]] = [(f" {f.text}\n", (section, f)) for f in self._open(section)]
            if int(number.group(1)) == 1:
                options.append((f" {NO_POSITIVES if section == 'positive' else NO_CONCERNS}\n", (section, None)))
            if options:
                self.forced = self.codec.trie(options)
            return
        if section == "prediction" and line == "Analysis:":
            prediction = _PREDICTION.search(self.text)
            if prediction is None:
                return
            rise = prediction.group(1) == "Up"
            analysis = analysis_for(self.grounding.window, rise, self.chosen["positive"], self.chosen["concern"])
            self.forced = self.codec.trie([(f" {analysis}", "analysis")], end_with_eos=True)

    def _completed(self, value: Any) -> None:
        if value == "header":  # a forced header ends at its first item number: that item's options follow at once
            self._trigger()
            return
        if not isinstance(value, tuple):
            return
        side, fact = value
        if fact is not None:
            self.chosen[side].append(fact)
        if fact is None or not self._open(side) or len(self.chosen[side]) >= MAX_ITEMS:  # the side is done: next header
            following = f"{CONCERNS_HEADER}\n1." if side == "positive" else f"{PREDICTION_HEADER}\nPrediction:"
            self.forced = self.codec.trie([(following, "header")])


@dataclass(frozen=True)
class GroundedRequest:
    """A prompt's grounding compiled for a tokenizer; ``state()`` for each candidate decoded."""

    grounding: Grounding
    codec: Codec

    def state(self) -> GroundedState:
        return GroundedState(self.grounding, self.codec)


def compile_grounding(grounding: Grounding | None, tokenizer: Any) -> GroundedRequest | None:
    return None if grounding is None else GroundedRequest(grounding, codec_for(tokenizer))


def mask_logits(logits: Any, allowed: Sequence[list[int] | None]) -> Any:
    """Set every logit outside a row's allowed tokens to -inf (rows with None untouched); in place."""
    import torch

    for row, ids in enumerate(allowed):
        if ids is None or not ids:
            continue
        index = torch.tensor(ids, device=logits.device)
        keep = logits[row, index].clone()
        logits[row].fill_(float("-inf"))
        logits[row, index] = keep
    return logits
