"""Choosing the few text items of a week that a prompt quotes.

Raw tweets are noisy. In order, for one ticker and one week:
  1. retweets are dropped ("RT @user: ..."): they repeat someone else's text;
  2. cashtag collisions are dropped: the text must contain the cashtag ``$TICKER`` as a token, upper
     case, not glued to other characters (``U$D``, ``L$D``, ``HEI$T`` and ``$T.TO`` are not AT&T or
     Dominion) — or, for news items that carry no cashtags, the company's name;
  3. obvious spam and bot text is dropped: ticker lists (more than 3 cashtags), stock-screener
     templates ("Day High", "Also See:", "relative volume", "#stocks #pennystocks"), promotion ("sign
     up", "free trial", "check out my"), texts with fewer than 4 real words once links, cashtags,
     hashtags and mentions are removed — and text addressed to the model rather than to readers
     ("ignore the above", "Prediction: ...", the answer's section headers): a post is data, and one
     that tries to steer the forecast never reaches a prompt;
  4. near-duplicates are dropped: the same normalised text (links, mentions, case and punctuation
     removed) is kept once, earliest first;
  5. at most one item per author, then a per-week cap, chosen deterministically: most followers
     (a proxy for reach) first, then most reposts, then earliest, then the dedup key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import pandas as pd

MAX_CASHTAGS = 3
MIN_WORDS = 4

URL_RE = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
MENTION_RE = re.compile(r"@\w+")
HASHTAG_RE = re.compile(r"#\w+")
CASHTAG_RE = re.compile(r"(?<![\w$])\$[A-Za-z][A-Za-z.\-]{0,6}\b")
RETWEET_RE = re.compile(r"^\s*RT\s+@\w+", re.IGNORECASE)
SPAM_RE = re.compile(
    r"\b(day high|day low|52wk high|52wk low|also see:|stock forum|free trial|sign up|click here|"
    r"join (us|now)|subscribe|giveaway|follow back|#pennystocks|#tradeideas|#stockmarket|stock quote|"
    r"get great research|killer daytrading|alerts? service|stock alerts?|new picks|stock picks|penny stocks?|"
    r"for subscribers|chatroom|chat room|trade alerts?|traders here|daytraders|& more - free|#f4f|#rt2gain|"
    r"relative volume|unusual volume|trade diary|check out my|check out our|swingtrade|free newsletter|"
    r"top gainers|top losers|most active)\b",
    re.IGNORECASE,
)
# Text that addresses a language model instead of readers (prompt injection): dropped like spam.
INSTRUCTION_RE = re.compile(
    r"\b(ignore|disregard|forget)\b.{0,30}\b(above|previous|prior|earlier|instructions?|rules?|prompt)\b|"
    r"\bprediction\s*[:=]|\b(system|assistant)\s*(prompt|message)?\s*:|\byou are (now )?(an? )?(ai|assistant|model|analyst)\b|"
    r"\[\s*(positive developments|potential concerns|prediction)",
    re.IGNORECASE,
)
WORD_RE = re.compile(r"[A-Za-z]{2,}")
WORD_TOKEN_RE = re.compile(r"(?:\$(?=\d))?[A-Za-z0-9](?:[A-Za-z0-9'&%.,\-]*[A-Za-z0-9%])?")


@dataclass(frozen=True)
class SelectionStats:
    seen: int
    retweets: int
    collisions: int
    spam: int
    duplicates: int
    kept: int


@lru_cache(maxsize=1024)
def cashtag_pattern(ticker: str) -> re.Pattern[str]:
    """``$TICKER`` as a standalone upper-case token (``$BRK-A`` / ``$BRK.A`` both match BRK-A)."""
    escaped = re.escape(ticker).replace(r"\-", r"[-.]").replace(r"\.", r"[-.]")
    return re.compile(rf"(?:^|(?<=[\s(\[\"'.,;:!?/]))\${escaped}(?![\w$@&]|\.[A-Za-z])")


def normalise(text: str) -> str:
    text = URL_RE.sub(" ", text)
    text = RETWEET_RE.sub(" ", text)
    text = MENTION_RE.sub(" ", text)
    text = HASHTAG_RE.sub(" ", text)
    text = re.sub(r"[^a-z0-9$ ]", " ", text.lower())
    return re.sub(r"\s+", " ", text).strip()


def clean_for_prompt(text: str) -> str:
    """The text as quoted in a prompt: links removed, whitespace collapsed, HTML entities decoded."""
    text = URL_RE.sub("", text)
    text = text.replace("&amp;", "&").replace("&gt;", ">").replace("&lt;", "<").replace("&quot;", '"')
    text = re.sub(r"\s+", " ", text).strip(" -–—…")
    return text.strip()


def _reader_text(text: str) -> str:
    text = URL_RE.sub(" ", RETWEET_RE.sub(" ", text))
    text = CASHTAG_RE.sub(" ", MENTION_RE.sub(" ", text))
    return text.replace("&amp;", "&").replace("&quot;", '"').replace("#", " ")


def readable_words(text: str) -> list[str]:
    """The words a reader sees in a post: links, mentions, cashtags and hashtag signs removed.

    The view checker compares quotes with posts on these words (lower-cased), so a quote that drops
    a link or a cashtag list still matches its post.
    """
    return WORD_TOKEN_RE.findall(_reader_text(text))


def readable_quote(text: str, max_words: int = 12) -> str | None:
    """A short quote a person can read: the post's first sentence of 3+ readable words, or None.

    At most ``max_words`` words; None when no sentence keeps 3 words (a post of links and cashtags).
    """
    for sentence in re.split(r"(?<=[.!?])\s+", _reader_text(text).strip()):
        words = WORD_TOKEN_RE.findall(sentence)
        if len(words) >= 3:
            return " ".join(words[:max_words])
    return None


def is_spam(text: str) -> bool:
    if len(CASHTAG_RE.findall(text)) > MAX_CASHTAGS:
        return True
    if SPAM_RE.search(text) or INSTRUCTION_RE.search(text):
        return True
    stripped = CASHTAG_RE.sub(" ", HASHTAG_RE.sub(" ", MENTION_RE.sub(" ", URL_RE.sub(" ", text))))
    return len(WORD_RE.findall(stripped)) < MIN_WORDS


def mentions_company(text: str, ticker: str, company_name: str | None, source: str) -> bool:
    if cashtag_pattern(ticker).search(text):
        return True
    if source.startswith("stocknet") or not company_name:
        return False
    # News items carry no cashtags; accept the company's distinctive first name word.
    core = re.sub(r"^(the)\s+", "", company_name.strip(), flags=re.IGNORECASE).split()[0].strip(",.")
    return len(core) >= 3 and re.search(rf"\b{re.escape(core)}\b", text, re.IGNORECASE) is not None


@lru_cache(maxsize=262_144)
def classify(text: str, ticker: str, company_name: str | None, source: str) -> tuple[str, str]:
    """(verdict, normalised text): verdict is retweet, collision, spam or keep. Cached: a text is
    judged once even though it appears in several overlapping windows."""
    if RETWEET_RE.match(text):
        return "retweet", ""
    if not mentions_company(text, ticker, company_name, source):
        return "collision", ""
    if is_spam(text):
        return "spam", ""
    return "keep", normalise(text)


@dataclass(frozen=True)
class TextRecord:
    """The fields selection needs (the store's text columns)."""

    id: int
    source: str
    published_at: Any
    session_date: Any
    text: str
    author: str | None
    author_followers: int | None
    repost_count: int | None
    dedup_key: str


def records_from_frame(frame: pd.DataFrame) -> list[TextRecord]:
    columns = [f.name for f in fields(TextRecord)]
    if frame.empty:
        return []
    return [TextRecord(*row) for row in frame[columns].itertuples(index=False, name=None)]


def select_texts(
    items: list[TextRecord], ticker: str, company_name: str | None, cap: int
) -> tuple[list[TextRecord], SelectionStats]:
    """Apply the rules in the module docstring to one week's items."""
    seen = len(items)
    if not items or cap <= 0:
        return [], SelectionStats(seen, 0, 0, 0, 0, 0)
    ordered = sorted(items, key=lambda r: (r.published_at, r.dedup_key))
    retweets = collisions = spam = duplicates = 0
    seen_keys: set[str] = set()
    candidates: list[TextRecord] = []
    for record in ordered:
        verdict, key = classify(record.text or "", ticker, company_name, record.source)
        if verdict == "retweet":
            retweets += 1
        elif verdict == "collision":
            collisions += 1
        elif verdict == "spam":
            spam += 1
        else:
            if key in seen_keys:
                duplicates += 1
            else:
                seen_keys.add(key)
                candidates.append(record)
    ranked = sorted(
        candidates,
        key=lambda r: (-(r.author_followers or 0), -(r.repost_count or 0), r.published_at, r.dedup_key),
    )
    authors: set[str] = set()
    chosen: list[TextRecord] = []
    for record in ranked:
        if len(chosen) >= cap:
            break
        if record.author is not None:
            if record.author in authors:
                continue
            authors.add(record.author)
        chosen.append(record)
    chosen.sort(key=lambda r: (r.published_at, r.dedup_key))
    stats = SelectionStats(seen, retweets, collisions, spam, duplicates, len(chosen))
    return chosen, stats
