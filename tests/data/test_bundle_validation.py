"""Bad bundles: each gets a clear error naming file, row and field, and nothing is written."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from advisor.data.bundle import read_bundle
from advisor.data.importer import import_bundle
from advisor.errors import InputValidationError
from db.models import Company, DailyBar, TextItem
from tests.helpers import COMPANY_HEADER, PRICE_HEADER, TWEET_HEADER, make_bundle, read_rows, write_csv


def _rewrite(path: Path, edit: Callable[[list[str], list[list[str]]], tuple[list[str], list[list[str]]]]) -> None:
    header, rows = read_rows(path)
    header, rows = edit(header, rows)
    write_csv(path, header, rows)


def _set(row_index: int, column: str, value: str, header: list[str] = PRICE_HEADER):
    def edit(h: list[str], rows: list[list[str]]):
        rows[row_index][h.index(column)] = value
        return h, rows

    return edit


def _counts(factory: sessionmaker[Session]) -> tuple[int, int, int]:
    with factory() as session:
        return (
            session.scalar(select(func.count()).select_from(Company)),
            session.scalar(select(func.count()).select_from(DailyBar)),
            session.scalar(select(func.count()).select_from(TextItem)),
        )


CASES = [
    # (file, edit, expected row, expected field, message fragment)
    ("prices", lambda h, r: (h + ["extra"], [x + ["1"] for x in r]), None, "extra", "unexpected column"),
    ("prices", lambda h, r: ([c for c in h if c != "volume"], [x[:-1] for x in r]), None, "volume", "missing column"),
    ("prices", _set(4, "close", "abc"), 5, "close", "not a number"),
    ("prices", _set(6, "open", "nan"), 7, "open", "not a number"),
    ("prices", _set(7, "adj_close", "inf"), 8, "adj_close", "finite"),
    ("prices", _set(8, "low", "0"), 9, "low", "positive"),
    ("prices", _set(9, "high", "-3"), 10, "high", "positive"),
    ("prices", _set(3, "high", "1.0"), 4, "high", "below low"),
    ("prices", _set(2, "volume", "12.5"), 3, "volume", "whole-number"),
    ("prices", _set(2, "volume", "99999999999999999999"), 3, "volume", "too large"),
    ("prices", _set(4, "open", "100000"), 5, "open", "outside the day's range"),
    ("prices", _set(6, "close", "0.01"), 7, "close", "outside the day's range"),
    ("prices", _set(5, "date", "2014/01/09"), 6, "date", "YYYY-MM-DD"),
    ("prices", _set(5, "date", "2014-02-30"), 6, "date", "invalid date"),
    ("prices", _set(1, "date", "2014-01-04"), 2, "date", "not a XNYS trading session"),
    ("prices", _set(11, "ticker", "ZZZ"), 12, "ticker", "unknown ticker"),
    ("prices", lambda h, r: (h, r[:5] + [r[4]] + r[5:]), 6, "date", "duplicate row"),
    ("prices", lambda h, r: (h, [r[0], r[2], r[1]] + r[3:]), 3, "date", "out of order"),
    ("tweets", _set(3, "created_at_utc", "2014-01-05 10:00", TWEET_HEADER), 4, "created_at_utc", "UTC timestamp"),
    ("tweets", _set(3, "created_at_utc", "2014-13-05T10:00:00Z", TWEET_HEADER), 4, "created_at_utc", "invalid timestamp"),
    ("tweets", _set(2, "ticker", "QQQQ", TWEET_HEADER), 3, "ticker", "unknown ticker"),
    ("tweets", _set(2, "user_followers", "-1", TWEET_HEADER), 3, "user_followers", "whole number"),
    ("tweets", _set(2, "text", "  ", TWEET_HEADER), 3, "text", "empty text"),
    ("tweets", _set(2, "text", "good\x00news", TWEET_HEADER), 3, "text", "NUL"),
    ("tweets", _set(2, "tweet_id", "9" * 200, TWEET_HEADER), 3, "tweet_id", "longer than 64"),
    ("tweets", _set(2, "user_id", "7" * 500, TWEET_HEADER), 3, "user_id", "longer than 100"),
    ("tweets", _set(2, "user_followers", "99999999999999999999", TWEET_HEADER), 3, "user_followers", "too large"),
    ("tweets", _set(1, "created_at_utc", "1975-03-04T15:00:00Z", TWEET_HEADER), 2, "created_at_utc", "before the XNYS calendar starts"),
    ("companies", _set(1, "ticker", "bad ticker", COMPANY_HEADER), 2, "ticker", "invalid ticker"),
    ("companies", lambda h, r: (h, r + [r[0]]), 4, "ticker", "duplicate ticker"),
]


@pytest.mark.parametrize(("stem", "edit", "row", "field", "fragment"), CASES)
def test_bad_bundle_is_refused_with_location_and_nothing_written(
    tmp_path: Path, sqlite_factory: sessionmaker[Session], stem: str, edit, row, field, fragment
) -> None:
    bundle = make_bundle(tmp_path / "bundle", tweets_per_session=1, end=date(2014, 2, 28))
    _rewrite(bundle / f"{stem}.csv.gz", edit)
    with pytest.raises(InputValidationError) as info:
        import_bundle(sqlite_factory, bundle, progress=False)
    error = info.value
    assert error.file is not None and error.file.endswith(f"{stem}.csv.gz")
    assert error.row == row
    assert error.field == field
    assert fragment in str(error)
    assert _counts(sqlite_factory) == (0, 0, 0)


def test_conflicting_duplicate_tweet_is_refused_but_exact_duplicates_are_collapsed(tmp_path: Path, sqlite_factory) -> None:
    bundle = make_bundle(tmp_path / "bundle", tweets_per_session=1, end=date(2014, 2, 28))
    path = bundle / "tweets.csv.gz"
    header, rows = read_rows(path)
    write_csv(path, header, rows + [rows[0], rows[1]])
    summary = import_bundle(sqlite_factory, bundle, progress=False)
    assert "2 exact duplicate tweet rows collapsed" in summary.notes
    assert summary.texts_added == len(rows)

    other = make_bundle(tmp_path / "other", tweets_per_session=1, end=date(2014, 2, 28))
    header, rows = read_rows(other / "tweets.csv.gz")
    changed = list(rows[0])
    changed[header.index("text")] = "a different text with the same id $AAA"
    write_csv(other / "tweets.csv.gz", header, rows + [changed])
    with pytest.raises(InputValidationError, match="appears twice with different content") as info:
        read_bundle(other)
    assert info.value.field == "tweet_id"


def test_future_dates_are_refused(tmp_path: Path, sqlite_factory) -> None:
    bundle = make_bundle(tmp_path / "bundle", tweets_per_session=1, end=date(2014, 2, 28))
    with pytest.raises(InputValidationError, match="in the future") as info:
        import_bundle(sqlite_factory, bundle, progress=False, today=date(2014, 2, 1))
    assert info.value.field == "date"
    assert _counts(sqlite_factory) == (0, 0, 0)


def test_empty_directory(tmp_path: Path, sqlite_factory) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputValidationError, match="no bundle files found"):
        import_bundle(sqlite_factory, empty, progress=False)


def test_missing_directory(tmp_path: Path, sqlite_factory) -> None:
    with pytest.raises(InputValidationError, match="not a directory"):
        import_bundle(sqlite_factory, tmp_path / "nope", progress=False)


def test_missing_prices_file(tmp_path: Path, sqlite_factory) -> None:
    bundle = make_bundle(tmp_path / "bundle", tweets_per_session=1, end=date(2014, 1, 31))
    (bundle / "prices.csv.gz").unlink()
    with pytest.raises(InputValidationError, match="missing prices"):
        import_bundle(sqlite_factory, bundle, progress=False)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_gzip(tmp_path: Path, sqlite_factory, damage: str) -> None:
    bundle = make_bundle(tmp_path / "bundle", tweets_per_session=1, end=date(2014, 1, 31))
    path = bundle / "tweets.csv.gz"
    payload = path.read_bytes()
    path.write_bytes(payload[: len(payload) // 2] if damage == "truncate" else b"\x1f\x8bnot really gzip at all")
    with pytest.raises(InputValidationError, match="corrupt or truncated gzip") as info:
        import_bundle(sqlite_factory, bundle, progress=False)
    assert info.value.file.endswith("tweets.csv.gz")
    assert _counts(sqlite_factory) == (0, 0, 0)


def test_empty_file_and_header_only(tmp_path: Path, sqlite_factory) -> None:
    bundle = make_bundle(tmp_path / "bundle", tweets_per_session=1, end=date(2014, 1, 31))
    (bundle / "prices.csv.gz").write_bytes(gzip.compress(b""))
    with pytest.raises(InputValidationError, match="file is empty"):
        import_bundle(sqlite_factory, bundle, progress=False)
    write_csv(bundle / "prices.csv.gz", PRICE_HEADER, [])
    with pytest.raises(InputValidationError, match="no rows"):
        import_bundle(sqlite_factory, bundle, progress=False)


def test_a_bad_second_bundle_leaves_the_first_untouched(tmp_path: Path, sqlite_factory) -> None:
    good = make_bundle(tmp_path / "good", tweets_per_session=1, end=date(2014, 2, 28))
    import_bundle(sqlite_factory, good, progress=False)
    before = _counts(sqlite_factory)
    bad = make_bundle(tmp_path / "bad", tweets_per_session=1, end=date(2014, 4, 30))
    _rewrite(bad / "tweets.csv.gz", _set(-1, "created_at_utc", "yesterday", TWEET_HEADER))
    with pytest.raises(InputValidationError):
        import_bundle(sqlite_factory, bad, progress=False)
    assert _counts(sqlite_factory) == before


def test_plain_csv_files_are_accepted(tmp_path: Path, sqlite_factory) -> None:
    bundle = make_bundle(tmp_path / "bundle", tweets_per_session=1, end=date(2014, 1, 31))
    for stem in ("companies", "prices", "tweets"):
        header, rows = read_rows(bundle / f"{stem}.csv.gz")
        write_csv(bundle / f"{stem}.csv", header, rows)
        (bundle / f"{stem}.csv.gz").unlink()
    summary = import_bundle(sqlite_factory, bundle, progress=False)
    assert summary.bars_added > 0 and summary.texts_added > 0
