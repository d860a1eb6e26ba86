"""Text selection: retweets, cashtag collisions, spam, duplicates, per-author and per-week caps."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from advisor.data.textselect import TextRecord, cashtag_pattern, clean_for_prompt, select_texts

T0 = datetime(2015, 1, 5, 15, tzinfo=UTC)


def rec(i: int, text: str, author: str | None = None, followers: int = 0, source: str = "stocknet-twitter") -> TextRecord:
    return TextRecord(i, source, T0 + timedelta(minutes=i), date(2015, 1, 5), text, author or f"u{i}", followers, 0, f"k{i}")


def test_cashtag_collisions_are_not_the_company() -> None:
    pattern = cashtag_pattern("D")
    assert pattern.search("Dominion raises dividend $D")
    for text in ["precio del barril a U$D 40", "A$AP Rocky - L$D", "$D.TO moves", "x$D", "$DJIA up"]:
        assert not pattern.search(text), text
    assert cashtag_pattern("BRK-A").search("buying $BRK.A today")


def test_filters_and_counts() -> None:
    items = [
        rec(1, "RT @news: Apple beats estimates on iPhone sales $AAPL"),
        rec(2, "Apple beats estimates on iPhone sales, shares climb $AAPL"),
        rec(3, "apple BEATS estimates on iphone sales, shares climb!! $AAPL http://t.co/x"),
        rec(4, "Day High http://t.co/y Also See: $AAPL $MSFT $FB $GOOG"),
        rec(5, "$AAPL"),
        rec(6, "L$D is not a stock ticker mention at all"),
        rec(7, "Apple opens a new campus in Texas according to reports $AAPL"),
    ]
    chosen, stats = select_texts(items, "AAPL", "Apple Inc.", cap=5)
    assert [r.id for r in chosen] == [2, 7]
    assert (stats.retweets, stats.duplicates, stats.spam, stats.collisions) == (1, 1, 2, 1)


def test_one_item_per_author_and_reach_first() -> None:
    items = [
        rec(1, "Apple supplier warns of weaker demand this quarter $AAPL", author="a", followers=10),
        rec(2, "Apple supplier shares drop after weak demand warning $AAPL", author="a", followers=10),
        rec(3, "Apple Pay expands to three new countries this month $AAPL", author="b", followers=5000),
        rec(4, "Apple Watch preorders sell out within hours in the US $AAPL", author="c", followers=50),
    ]
    chosen, _ = select_texts(items, "AAPL", "Apple Inc.", cap=2)
    assert [r.id for r in chosen] == [3, 4]  # most reach first, then shown in time order


def test_news_without_cashtag_matches_company_name() -> None:
    item = rec(1, "Microsoft unveils new cloud pricing for enterprise customers", source="yfinance-news")
    chosen, _ = select_texts([item], "MSFT", "Microsoft Corporation", cap=3)
    assert len(chosen) == 1


def test_clean_for_prompt() -> None:
    assert clean_for_prompt("AT&amp;T wins deal http://t.co/abc  more…") == "AT&T wins deal more"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=80), max_size=25), st.integers(min_value=0, max_value=6), st.randoms())
def test_selection_is_deterministic_capped_and_order_free(texts: list[str], cap: int, rnd) -> None:
    items = [rec(i, t + " $AAPL apple shares news today") for i, t in enumerate(texts)]
    chosen, stats = select_texts(items, "AAPL", "Apple Inc.", cap)
    shuffled = list(items)
    rnd.shuffle(shuffled)
    again, _ = select_texts(shuffled, "AAPL", "Apple Inc.", cap)
    assert [r.id for r in chosen] == [r.id for r in again]
    assert len(chosen) <= cap
    assert stats.kept == len(chosen)
    assert len({r.author for r in chosen}) == len(chosen)
