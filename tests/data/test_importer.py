"""Importing bundles: idempotent, incremental, one transaction, calendar-aware timestamps."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from advisor.data.importer import import_bundle
from db.models import DailyBar, TextItem
from tests.helpers import make_bundle, read_rows, write_csv


def test_import_then_reimport_changes_nothing(factory: sessionmaker[Session], synthetic_bundle: Path) -> None:
    first = import_bundle(factory, synthetic_bundle, progress=False)
    assert first.companies_added == 3 and first.bars_added > 300 and first.texts_added > 900
    second = import_bundle(factory, synthetic_bundle, progress=False)
    assert not second.changed
    assert second.bars_existing == first.bars_added
    assert second.texts_existing == first.texts_added
    assert second.companies_existing == 3


def test_bundle_with_more_rows_adds_only_those(factory: sessionmaker[Session], tmp_path: Path) -> None:
    short = make_bundle(tmp_path / "short", end=date(2014, 3, 31))
    longer = make_bundle(tmp_path / "long", end=date(2014, 5, 30))
    a = import_bundle(factory, short, progress=False)
    b = import_bundle(factory, longer, progress=False)
    assert b.bars_existing == a.bars_added
    assert b.bars_added > 0
    with factory() as session:
        total = session.scalar(select(func.count()).select_from(DailyBar))
    assert total == a.bars_added + b.bars_added


def test_changed_values_are_reported_not_overwritten(sqlite_factory, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", end=date(2014, 2, 28), tweets_per_session=1)
    import_bundle(sqlite_factory, bundle, progress=False)
    header, rows = read_rows(bundle / "prices.csv.gz")
    original = float(rows[0][header.index("close")])
    changed = original * 1.01
    rows[0][header.index("close")] = f"{changed:.6f}"
    high = header.index("high")
    rows[0][high] = f"{max(float(rows[0][high]), changed):.6f}"  # the close stays within the day's range
    write_csv(bundle / "prices.csv.gz", header, rows)
    summary = import_bundle(sqlite_factory, bundle, progress=False)
    assert summary.bars_conflicting == 1 and summary.bars_added == 0
    assert any("differ from stored values" in line for line in summary.lines())
    with sqlite_factory() as session:
        stored = session.scalars(select(DailyBar.close).order_by(DailyBar.ticker, DailyBar.date)).first()
    assert stored == original


def test_bars_become_available_at_the_session_close(sqlite_factory, synthetic_bundle: Path) -> None:
    import_bundle(sqlite_factory, synthetic_bundle, progress=False)
    with sqlite_factory() as session:
        winter = session.get(DailyBar, ("AAA", date(2014, 1, 2)))
        summer = session.get(DailyBar, ("AAA", date(2014, 6, 2)))
    assert winter.available_at == datetime(2014, 1, 2, 21, 0, tzinfo=UTC)  # 16:00 EST
    assert summer.available_at == datetime(2014, 6, 2, 20, 0, tzinfo=UTC)  # 16:00 EDT


def test_after_close_tweets_count_for_the_next_session(sqlite_factory, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", end=date(2014, 1, 10), tweets_per_session=1)
    header, rows = read_rows(bundle / "tweets.csv.gz")
    base = list(rows[0])
    extra = []
    # Friday 2014-01-03 closes at 21:00 UTC; Monday 2014-01-06 is the next session.
    for i, stamp in enumerate(["2014-01-03T20:59:59Z", "2014-01-03T21:00:00Z", "2014-01-04T15:00:00Z"]):
        row = list(base)
        row[header.index("created_at_utc")] = stamp
        row[header.index("tweet_id")] = str(900 + i)
        extra.append(row)
    write_csv(bundle / "tweets.csv.gz", header, rows + extra)
    import_bundle(sqlite_factory, bundle, progress=False)
    with sqlite_factory() as session:
        sessions = dict(session.execute(select(TextItem.external_id, TextItem.session_date).where(TextItem.external_id.in_(["900", "901", "902"]))).all())
    assert sessions == {"900": date(2014, 1, 3), "901": date(2014, 1, 6), "902": date(2014, 1, 6)}


def test_early_close_moves_afternoon_tweets_to_the_next_session(sqlite_factory, tmp_path: Path) -> None:
    """2014-11-28 (day after Thanksgiving) closed at 13:00 New York time (18:00 UTC)."""
    bundle = make_bundle(tmp_path / "b", start=date(2014, 11, 20), end=date(2014, 12, 5), tweets_per_session=1)
    header, rows = read_rows(bundle / "tweets.csv.gz")
    late = list(rows[0])
    late[header.index("created_at_utc")] = "2014-11-28T18:30:00Z"
    late[header.index("tweet_id")] = "777"
    write_csv(bundle / "tweets.csv.gz", header, rows + [late])
    import_bundle(sqlite_factory, bundle, progress=False)
    with sqlite_factory() as session:
        item = session.scalars(select(TextItem).where(TextItem.external_id == "777")).one()
        bar = session.get(DailyBar, ("AAA", date(2014, 11, 28)))
    assert item.session_date == date(2014, 12, 1)
    assert bar.available_at == datetime(2014, 11, 28, 18, 0, tzinfo=UTC)


def test_real_bundle_imports_completely(real_db) -> None:
    with real_db() as session:
        assert session.scalar(select(func.count()).select_from(DailyBar)) == 66_100
        assert session.scalar(select(func.count()).select_from(TextItem)) == 92_244 - 37
