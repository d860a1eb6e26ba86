"""Test helpers: a deterministic synthetic bundle in the stocknet format, and CSV writers."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np

from advisor import market_calendar

PRICE_HEADER = ["ticker", "date", "open", "high", "low", "close", "adj_close", "volume"]
TWEET_HEADER = ["created_at_utc", "ticker", "tweet_id", "text", "user_id", "user_followers", "retweet_count"]
COMPANY_HEADER = ["ticker", "name", "sector"]

SENTENCES = [
    "{name} beats earnings estimates and raises guidance for the year",
    "analysts cut their price target on {name} after weak sales",
    "{name} announces a new product line, shares react",
    "regulators open an inquiry into {name} accounting practices",
    "{name} signs a large supply contract with a government agency",
    "insiders at {name} sold shares this week according to filings",
]


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = buffer.getvalue().encode()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def make_bundle(
    directory: Path,
    tickers: Sequence[str] = ("AAA", "BBB", "CCC"),
    start: date = date(2014, 1, 2),
    end: date = date(2014, 6, 30),
    tweets_per_session: int = 3,
    seed: int = 0,
) -> Path:
    """A small bundle: random-walk prices on real NYSE sessions and templated tweets."""
    directory.mkdir(parents=True, exist_ok=True)
    sessions = market_calendar.sessions_between(start, end)
    companies = [(t, f"{t.title()} Industries Inc.", "Technology") for t in tickers]
    prices: list[list[object]] = []
    tweets: list[list[object]] = []
    for ti, (ticker, name, _sector) in enumerate(companies):
        # One generator per ticker, so bundles with the same start agree on the days they share.
        rng = np.random.default_rng([seed, ti])
        price = 50.0 + 10 * ti
        for day in sessions:
            ret = rng.normal(0.0005, 0.015)
            open_ = price * (1 + rng.normal(0, 0.003))
            close = price * (1 + ret)
            high = max(open_, close) * (1 + abs(rng.normal(0, 0.004)))
            low = min(open_, close) * (1 - abs(rng.normal(0, 0.004)))
            prices.append([ticker, day.isoformat(), f"{open_:.6f}", f"{high:.6f}", f"{low:.6f}", f"{close:.6f}", f"{close * 0.98:.6f}", int(rng.integers(1e5, 1e7))])
            price = close
            for k in range(tweets_per_session):
                # Spread over the day in UTC, some after the 21:00/20:00 UTC close.
                posted = datetime.combine(day, time(13, 0), tzinfo=UTC) + timedelta(hours=4 * k, minutes=int(rng.integers(0, 59)))
                text = SENTENCES[int(rng.integers(0, len(SENTENCES)))].format(name=name) + f" ${ticker}"
                tweet_id = 5 * 10**17 + ti * 10**8 + day.toordinal() * 10 + k
                tweets.append([posted.strftime("%Y-%m-%dT%H:%M:%SZ"), ticker, tweet_id, text, 1000 + int(rng.integers(0, 50)), int(rng.integers(0, 10_000)), int(rng.integers(0, 20))])
    write_csv(directory / "companies.csv.gz", COMPANY_HEADER, companies)
    write_csv(directory / "prices.csv.gz", PRICE_HEADER, prices)
    write_csv(directory / "tweets.csv.gz", TWEET_HEADER, tweets)
    return directory


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    data = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    rows = list(csv.reader(io.StringIO(data)))
    return rows[0], rows[1:]
