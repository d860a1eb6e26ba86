"""Reading and validating a market-data bundle in the stocknet format.

A bundle is a directory with ``companies.csv[.gz]`` and ``prices.csv[.gz]`` (required) and
``tweets.csv[.gz]`` (optional). Every file is validated completely before anything is written; the
first problem raises :class:`InputValidationError` naming the file, the row (1-based data row; the
header is not counted) and the field, with a count of further rows that have the same problem.

Duplicate policy: a repeated (ticker, date) in prices is an error. A tweet repeated *exactly*
(every column equal) is collapsed and counted (the public stocknet bundle contains 37 such rows); the
same (ticker, tweet_id) with different content is an error.
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from advisor import market_calendar
from advisor.errors import DataUnavailableError, InputValidationError

COMPANY_COLUMNS = ["ticker", "name", "sector"]
PRICE_COLUMNS = ["ticker", "date", "open", "high", "low", "close", "adj_close", "volume"]
TWEET_COLUMNS = ["created_at_utc", "ticker", "tweet_id", "text", "user_id", "user_followers", "retweet_count"]
PRICE_FIELDS = ["open", "high", "low", "close", "adj_close"]

TICKER_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9.\-]{0,15}$")
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|\+00:00)$"
INTEGER_PATTERN = r"^-?\d+$"
MAX_INTEGER_DIGITS = 18  # counts (volume, followers, reposts) below 10^18 fit a signed 64-bit column
MAX_EXTERNAL_ID = 64  # text_items.external_id
MAX_AUTHOR = 100  # text_items.author


@dataclass
class Bundle:
    """A validated bundle: typed frames ready to write."""

    directory: Path
    companies: pd.DataFrame
    prices: pd.DataFrame
    tweets: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def find_file(directory: Path, stem: str) -> Path | None:
    for name in (f"{stem}.csv.gz", f"{stem}.csv"):
        path = directory / name
        if path.is_file():
            return path
    return None


def read_bundle(directory: Path | str, today: date | None = None) -> Bundle:
    """Read and validate every file of the bundle in ``directory``; raise on the first problem."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise InputValidationError("not a directory", file=directory)
    companies_path = find_file(directory, "companies")
    prices_path = find_file(directory, "prices")
    tweets_path = find_file(directory, "tweets")
    if companies_path is None and prices_path is None and tweets_path is None:
        raise InputValidationError(
            "no bundle files found (expected companies.csv.gz, prices.csv.gz and optionally tweets.csv.gz)",
            file=directory,
        )
    if companies_path is None:
        raise InputValidationError("missing companies.csv.gz (or companies.csv)", file=directory)
    if prices_path is None:
        raise InputValidationError("missing prices.csv.gz (or prices.csv)", file=directory)
    today = today or market_calendar.exchange_today()

    notes: list[str] = []
    companies = _validate_companies(_read_csv(companies_path, COMPANY_COLUMNS), companies_path)
    known = set(companies["ticker"])
    prices = _validate_prices(_read_csv(prices_path, PRICE_COLUMNS), prices_path, known, today)
    without_prices = sorted(known - set(prices["ticker"]))
    if without_prices:
        notes.append(f"companies without prices: {', '.join(without_prices)}")
    if tweets_path is not None:
        raw = _read_csv(tweets_path, TWEET_COLUMNS, allow_no_rows=True)
        tweets, collapsed = _validate_tweets(raw, tweets_path, known, today) if len(raw) else (_empty_tweets(), 0)
        if collapsed:
            notes.append(f"{collapsed} exact duplicate tweet rows collapsed")
    else:
        tweets = _empty_tweets()
        notes.append("no tweets file: text items not imported")
    return Bundle(directory=directory, companies=companies, prices=prices, tweets=tweets, notes=notes)


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def _read_csv(path: Path, columns: list[str], *, allow_no_rows: bool = False) -> pd.DataFrame:
    """Read every cell as text (types are validated by us, with row numbers), check the header."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                payload = handle.read()
        else:
            payload = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise InputValidationError(f"cannot read file (corrupt or truncated gzip?): {exc}", file=path) from exc
    if not payload.strip():
        raise InputValidationError("file is empty", file=path)
    try:
        import io

        frame = pd.read_csv(io.BytesIO(payload), dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise InputValidationError(f"not a readable CSV file: {exc}", file=path) from exc
    header = list(frame.columns)
    missing = [c for c in columns if c not in header]
    extra = [c for c in header if c not in columns]
    if missing:
        raise InputValidationError(f"missing column(s) {missing}; expected {columns}", file=path, field=missing[0])
    if extra:
        raise InputValidationError(f"unexpected column(s) {extra}; expected {columns}", file=path, field=extra[0])
    if frame.empty and not allow_no_rows:
        raise InputValidationError("file has a header but no rows", file=path)
    return frame[columns]


def _fail(path: Path, bad: pd.Series | np.ndarray, field_name: str, message: str) -> None:
    """Raise for the first True in ``bad`` (positional), counting the others."""
    bad = np.asarray(bad, dtype=bool)
    if not bad.any():
        return
    first = int(np.argmax(bad))
    more = int(bad.sum()) - 1
    suffix = f" (and {more} more row(s) like it)" if more else ""
    raise InputValidationError(message + suffix, file=path, row=first + 1, field=field_name)


def _value_at(frame: pd.DataFrame, bad: np.ndarray, column: str) -> str:
    return repr(frame[column].iloc[int(np.argmax(bad))])


def _check_pattern(frame: pd.DataFrame, path: Path, column: str, pattern: str, what: str) -> None:
    bad = ~frame[column].str.match(pattern).to_numpy(dtype=bool)
    if bad.any():
        _fail(path, bad, column, f"{what} expected, got {_value_at(frame, bad, column)}")


def _whole_numbers(frame: pd.DataFrame, path: Path, column: str) -> pd.Series:
    """A column of whole numbers (pattern already checked) as int64, refusing values a 64-bit column cannot hold."""
    digits = frame[column].str.lstrip("-").str.lstrip("0").str.len()
    bad = (digits > MAX_INTEGER_DIGITS).to_numpy()
    if bad.any():
        _fail(path, bad, column, f"{_value_at(frame, bad, column)} is too large (at most {MAX_INTEGER_DIGITS} digits)")
    return frame[column].astype(np.int64)


def _check_length(frame: pd.DataFrame, path: Path, column: str, limit: int) -> None:
    bad = (frame[column].str.len() > limit).to_numpy()
    if bad.any():
        _fail(path, bad, column, f"longer than {limit} characters ({int(frame[column].str.len().max())})")


def _check_tickers(frame: pd.DataFrame, path: Path, known: set[str]) -> None:
    bad = ~frame["ticker"].isin(known).to_numpy()
    if bad.any():
        _fail(path, bad, "ticker", f"unknown ticker {_value_at(frame, bad, 'ticker')} (not in companies file)")


def _check_not_future(days: pd.Series, path: Path, column: str, today: date) -> None:
    bad = (days > today).to_numpy()
    if bad.any():
        _fail(path, bad, column, f"date {days.iloc[int(np.argmax(bad))]} is in the future (today is {today})")


# --------------------------------------------------------------------------------------------------
# Per-file validation
# --------------------------------------------------------------------------------------------------


def _validate_companies(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    frame = frame.apply(lambda col: col.str.strip())
    bad = ~frame["ticker"].str.match(TICKER_PATTERN.pattern).to_numpy(dtype=bool)
    if bad.any():
        _fail(path, bad, "ticker", f"invalid ticker {_value_at(frame, bad, 'ticker')} (upper-case letters, digits, '.', '-')")
    _fail(path, (frame["name"] == "").to_numpy(), "name", "company name is empty")
    dup = frame["ticker"].duplicated(keep="first").to_numpy()
    if dup.any():
        _fail(path, dup, "ticker", f"duplicate ticker {_value_at(frame, dup, 'ticker')}")
    frame = frame.copy()
    frame["name"] = frame["name"].str.replace(r"\s+", " ", regex=True)
    frame["sector"] = frame["sector"].replace("", None)
    return frame.reset_index(drop=True)


def _validate_prices(frame: pd.DataFrame, path: Path, known: set[str], today: date) -> pd.DataFrame:
    frame = frame.apply(lambda col: col.str.strip())
    _check_tickers(frame, path, known)
    _check_pattern(frame, path, "date", DATE_PATTERN, "date YYYY-MM-DD")
    dates = pd.to_datetime(frame["date"], format="%Y-%m-%d", errors="coerce")
    bad = dates.isna().to_numpy()
    if bad.any():
        _fail(path, bad, "date", f"invalid date {_value_at(frame, bad, 'date')}")
    days = dates.dt.date
    _check_not_future(days, path, "date", today)
    out = pd.DataFrame({"ticker": frame["ticker"], "date": days})
    for column in PRICE_FIELDS:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna().to_numpy()
        if bad.any():
            _fail(path, bad, column, f"not a number: {_value_at(frame, bad, column)}")
        bad = ~np.isfinite(values.to_numpy())
        if bad.any():
            _fail(path, bad, column, f"not a finite number: {_value_at(frame, bad, column)}")
        bad = (values <= 0).to_numpy()
        if bad.any():
            _fail(path, bad, column, f"price must be positive, got {_value_at(frame, bad, column)}")
        out[column] = values.astype(float)
    _check_pattern(frame, path, "volume", INTEGER_PATTERN, "whole-number volume")
    volume = _whole_numbers(frame, path, "volume")
    _fail(path, (volume < 0).to_numpy(), "volume", "volume must not be negative")
    out["volume"] = volume
    bad = (out["high"] < out["low"]).to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        _fail(path, bad, "high", f"high {out['high'].iloc[i]} is below low {out['low'].iloc[i]}")
    for column in ("open", "close"):  # a day's open and close lie within its range
        bad = ((out[column] < out["low"]) | (out[column] > out["high"])).to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            _fail(path, bad, column, f"{column} {out[column].iloc[i]} is outside the day's range [low {out['low'].iloc[i]}, high {out['high'].iloc[i]}]")
    dup = out.duplicated(["ticker", "date"], keep=False).to_numpy()
    if dup.any():
        first_dup = out.duplicated(["ticker", "date"], keep="first").to_numpy()
        i = int(np.argmax(first_dup))
        ticker, day = out["ticker"].iloc[i], out["date"].iloc[i]
        rows = [int(r) + 1 for r in np.flatnonzero(dup & (out["ticker"] == ticker).to_numpy() & (out["date"] == day).to_numpy())]
        _fail(path, first_dup, "date", f"duplicate row for {ticker} on {day} (rows {rows})")
    # Dates must increase within each ticker (files are exported in order; disorder means damage).
    previous = out.groupby("ticker", sort=False)["date"].shift(1)
    bad = (previous.notna() & (out["date"] < previous.where(previous.notna(), out["date"]))).to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        _fail(path, bad, "date", f"dates out of order for {out['ticker'].iloc[i]}: {out['date'].iloc[i]} after {previous.iloc[i]}")
    try:
        out["available_at"] = market_calendar.closes_for_sessions(out["date"])
    except DataUnavailableError as exc:
        sessions = set(market_calendar.sessions_between(out["date"].min(), out["date"].max()))
        bad = (~out["date"].isin(sessions)).to_numpy()
        _fail(path, bad, "date", f"{_value_at(out, bad, 'date')} is not a {market_calendar.EXCHANGE} trading session")
        raise InputValidationError(str(exc), file=path, field="date") from exc
    return out.reset_index(drop=True)


def _validate_tweets(frame: pd.DataFrame, path: Path, known: set[str], today: date) -> tuple[pd.DataFrame, int]:
    for column in ("created_at_utc", "ticker", "tweet_id", "user_id", "user_followers", "retweet_count"):
        frame[column] = frame[column].str.strip()
    _check_tickers(frame, path, known)
    _check_pattern(frame, path, "created_at_utc", TIMESTAMP_PATTERN, "UTC timestamp YYYY-MM-DDTHH:MM:SSZ")
    published = pd.to_datetime(frame["created_at_utc"], utc=True, errors="coerce", format="ISO8601")
    bad = published.isna().to_numpy()
    if bad.any():
        _fail(path, bad, "created_at_utc", f"invalid timestamp {_value_at(frame, bad, 'created_at_utc')}")
    _check_not_future(published.dt.date, path, "created_at_utc", today)
    bad = (published < pd.Timestamp(market_calendar.CALENDAR_START, tz="UTC")).to_numpy()
    if bad.any():
        _fail(path, bad, "created_at_utc", f"{_value_at(frame, bad, 'created_at_utc')} is before the {market_calendar.EXCHANGE} calendar starts ({market_calendar.CALENDAR_START})")
    for column in ("tweet_id", "user_id", "user_followers", "retweet_count"):
        _check_pattern(frame, path, column, r"^\d+$", "non-negative whole number")
    _check_length(frame, path, "tweet_id", MAX_EXTERNAL_ID)
    _check_length(frame, path, "user_id", MAX_AUTHOR)
    followers, reposts = _whole_numbers(frame, path, "user_followers"), _whole_numbers(frame, path, "retweet_count")
    bad = (frame["text"].str.strip() == "").to_numpy()
    if bad.any():
        _fail(path, bad, "text", "empty text")
    bad = frame["text"].str.contains("\x00", regex=False).to_numpy()
    if bad.any():
        _fail(path, bad, "text", "contains a NUL character")

    exact_dup = frame.duplicated(keep="first").to_numpy()
    collapsed = int(exact_dup.sum())
    keep = ~exact_dup
    frame, published = frame[keep], published[keep]
    conflict = frame.duplicated(["ticker", "tweet_id"], keep="first").to_numpy()
    if conflict.any():
        original_rows = np.flatnonzero(keep)
        i = int(np.argmax(conflict))
        _fail(
            path,
            np.isin(np.arange(len(keep)), original_rows[conflict]),
            "tweet_id",
            f"tweet {frame['tweet_id'].iloc[i]} for {frame['ticker'].iloc[i]} appears twice with different content",
        )
    out = pd.DataFrame(
        {
            "ticker": frame["ticker"].to_numpy(),
            "external_id": frame["tweet_id"].to_numpy(),
            "published_at": published.to_numpy(),
            "text": frame["text"].to_numpy(),
            "author": frame["user_id"].to_numpy(),
            "author_followers": followers[keep].to_numpy(),
            "repost_count": reposts[keep].to_numpy(),
        }
    )
    out["published_at"] = pd.to_datetime(out["published_at"], utc=True)
    out["dedup_key"] = "tw:" + out["external_id"]
    out["source"] = "stocknet-twitter"
    out["session_date"] = market_calendar.information_sessions(out["published_at"])
    return out, collapsed


def _empty_tweets() -> pd.DataFrame:
    return pd.DataFrame(
        columns=[
            "ticker", "external_id", "published_at", "text", "author", "author_followers",
            "repost_count", "dedup_key", "source", "session_date",
        ]
    )
